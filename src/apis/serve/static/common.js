// What the question page (app.js) and the review page (review.js) share: API calls with the session's token,
// messages, a cache of decoded images and canvas helpers. Loaded first; everything is on window.apisCommon.
"use strict";

window.apisCommon = (() => {
  class AuthError extends Error {}

  let onLoggedOut = () => {};

  // fetch() with the session cookie and no caching; a 401 calls the page's logged-out handler and throws.
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", cache: "no-store", ...options };
    if (init.body !== undefined) init.headers = { "Content-Type": "application/json" };
    const response = await fetch(path, init);
    if (response.status === 401) {
      onLoggedOut();
      throw new AuthError("not logged in");
    }
    return response;
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) {
      return `HTTP ${response.status}`;
    }
  }

  let toastTimer = null;
  function toast(text, ms = 3500) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => el.classList.remove("show"), ms);
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // Decoded images by image id, least recently used first; `trim(needed)` keeps at most `size` besides
  // the ids in `needed`.
  class ImageCache {
    constructor(size) {
      this.size = size;
      this.entries = new Map();   // image_id -> {img, ready, promise}
    }

    peek(id) {
      return this.entries.get(id);
    }

    get(id, url) {
      let entry = this.entries.get(id);
      if (entry) {
        this.entries.delete(id);   // re-insert: the Map's order is least recently used first
        this.entries.set(id, entry);
        return entry;
      }
      const img = new Image();
      img.decoding = "async";
      img.src = url;
      entry = { img, ready: false, promise: null };
      entry.promise = img.decode().then(() => { entry.ready = true; return img; });
      entry.promise.catch(() => this.entries.delete(id));
      this.entries.set(id, entry);
      return entry;
    }

    trim(needed) {
      for (const id of this.entries.keys()) {
        if (this.entries.size <= this.size) break;
        if (!needed.has(id)) this.entries.delete(id);
      }
    }
  }

  // Size a canvas's backing store to its CSS size × the device pixel ratio; returns that ratio.
  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return dpr;
  }

  // A dark wide stroke under a light one, so a line shows on any image.
  function strokeTwice(ctx, path, dark, light, dash) {
    ctx.setLineDash([]);
    ctx.strokeStyle = "rgba(0,0,0,0.9)";
    ctx.lineWidth = dark;
    ctx.stroke(path);
    ctx.setLineDash(dash || []);
    ctx.strokeStyle = light.color;
    ctx.lineWidth = light.width;
    ctx.stroke(path);
    ctx.setLineDash([]);
  }

  function cssVar(name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  }

  // The whole image, scaled into `canvas`, with the part shown on the stage (`crop` {x, y, w, h}) dashed and
  // the object's box (xyxy, image pixels) in `color`.
  function renderContext(canvas, img, width, height, crop, box, color) {
    const dpr = fitCanvas(canvas);
    const ctx = canvas.getContext("2d");
    const W = canvas.width;
    const H = canvas.height;
    const s = Math.min(W / width, H / height);
    const ox = (W - width * s) / 2;
    const oy = (H - height * s) / 2;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0c0d10";
    ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, 0, 0, width, height, ox, oy, width * s, height * s);
    const [x0, y0, x1, y1] = box;
    const shown = new Path2D();
    shown.rect(ox + crop.x * s, oy + crop.y * s, crop.w * s, crop.h * s);
    strokeTwice(ctx, shown, 3 * dpr, { color: "#ffffff", width: 1 * dpr }, [4 * dpr, 3 * dpr]);
    const outline = new Path2D();
    outline.rect(ox + x0 * s, oy + y0 * s, (x1 - x0) * s, (y1 - y0) * s);
    strokeTwice(ctx, outline, 3 * dpr, { color, width: 1.5 * dpr });
  }

  return {
    AuthError, ImageCache, api, cssVar, detail, duration, fitCanvas, renderContext, strokeTwice, toast,
    setLoggedOut(handler) { onLoggedOut = handler; },
  };
})();
