// What the question page (app.js) and the review page (review.js) share: API calls with the session's token,
// messages, a throttle, a cache of decoded images, canvas helpers and the work loop (workLoop: lease ahead, show,
// decide, undo, progress, keys); the box page (boxes.js) uses the helpers. Loaded first; everything is on
// window.apisCommon.
"use strict";

window.apisCommon = (() => {
  class AuthError extends Error {}

  let onLoggedOut = () => {};   // set by workLoop: show the login screen

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

  // `fn` run at most once per `ms`: a call inside that window is run once, at its end (later calls in it are
  // dropped). The call returns what `fn` returns, or undefined when it is put off.
  function throttled(fn, ms) {
    let asked = 0;
    let later = null;
    function call() {
      const wait = asked + ms - Date.now();
      if (wait > 0) {
        if (!later) later = setTimeout(() => { later = null; call(); }, wait);
        return undefined;
      }
      asked = Date.now();
      return fn();
    }
    return call;
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

  // A CSS custom property of the page, read once.
  const cssVars = {};
  function cssVar(name, fallback) {
    if (!cssVars[name]) cssVars[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
    return cssVars[name];
  }

  // Clear `canvas` and draw the `crop` {x, y, w, h} of `img` (image pixels) scaled up to fill it, less a margin.
  // Returns the drawing context, the device pixel ratio, the scale s and the maps X, Y from image pixels
  // (continuous) to canvas pixels.
  function drawCrop(canvas, img, crop) {
    const dpr = fitCanvas(canvas);
    const ctx = canvas.getContext("2d");
    const W = canvas.width;
    const H = canvas.height;
    const pad = 16 * dpr;
    const s = Math.min((W - 2 * pad) / crop.w, (H - 2 * pad) / crop.h);
    const ox = (W - crop.w * s) / 2;
    const oy = (H - crop.h * s) / 2;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0c0d10";
    ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = s < 3;   // enlarged: show the real pixels, as questions and masks are made of them
    ctx.drawImage(img, crop.x, crop.y, crop.w, crop.h, ox, oy, crop.w * s, crop.h * s);
    return { ctx, dpr, s, ox, oy, X: (x) => ox + (x - crop.x) * s, Y: (y) => oy + (y - crop.y) * s };
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

  // ------------------------------------------------------------------------------------------ the work loop
  // One item (a question, a mask) at a time, decided by a key or a button. DEPTH items are leased ahead and their
  // images decoded before they are needed, so deciding switches to the next item without waiting for the network;
  // the decision is sent in the background and confirmed (or reported) when the server replies.
  //
  // `spec` is what is the page's own:
  //   routes {next, send, undo, progress, release}: the API paths;
  //   fields {id, ids, list, kind}: an item's id, the id list in the release body, the item list in the `next`
  //     reply, and the decision's name in the `send` body and in the buttons' data-* attribute;
  //   kinds: the decisions, each with a button #btn-KIND of class "answer"; keys: key -> a kind or an action's name
  //     (U and Backspace undo on both pages); actions: name -> function, optional;
  //   state: the page's own fields of the state object; global: the window property that holds it (tests read it);
  //   text {noun, loadingNext, fetchFailed, taken(id), unconfirmed(id)}; errorMs: how long error toasts stay;
  //   describe(item) and render(): fill in the side panel and draw the current item;
  //   prepare(item), optional: what else to make ready ahead besides the image;
  //   allowed(kind, item), optional: whether that decision's button is on for that item;
  //   blocked(kind, item), optional: called for a decision asked while its button is off;
  //   notStored(response, item): the server refused a decision; undone(body, reopen): undo's reply, with
  //     reopen(item, dropIds) to show an item again; bump(kind): count a decision in state.progress before the
  //     server does; renderProgress(); empty(), optional: fill in the empty screen; welcome(me): /api/me's reply.
  // Returns {state, start}.
  function workLoop(spec) {
    const DEPTH = 4;            // items held: the one shown and the ones prefetched
    const IMAGE_CACHE = 48;     // decoded images kept
    const POLL_MS = 4000;       // re-ask for items this often while there are none
    const PROGRESS_MS = 5000;   // refresh the progress bar at least this often
    const $ = (id) => document.getElementById(id);
    const { routes, fields, text } = spec;
    const idOf = (item) => item[fields.id];
    const keys = { u: "undo", U: "undo", Backspace: "undo", ...spec.keys };
    const actions = spec.actions || {};

    const state = {
      me: null,
      current: null,
      queue: [],
      settled: new Set(),      // ids decided here (so a late lease renewal never shows them again)
      images: new ImageCache(IMAGE_CACHE),
      inflight: new Set(),     // decisions not yet confirmed
      fetching: null,
      keyAt: null,
      timings: [],             // ms from a decision key to the next item drawn (the frame after)
      progress: null,
      mine: 0,
      pollTimer: null,
      epoch: 0,                // bumped by undo, so a list fetched before it is not trusted
      undoing: false,
      ...spec.state,
    };
    window[spec.global] = state;   // read by tests and handy in the console

    onLoggedOut = () => show("login");

    // ---------------------------------------------------------------------------------------- screens
    function show(which) {
      $("work").hidden = which !== "work";
      $("empty").hidden = which !== "empty";
      $("login").hidden = which !== "login";
    }

    function showEmpty() {
      show("empty");
      if (spec.empty) spec.empty();
    }

    function setOverlay(message) {
      const el = $("overlay");
      el.hidden = !message;
      el.textContent = message || "";
    }

    function setButtons(enabled) {
      for (const kind of spec.kinds) {
        $(`btn-${kind}`).disabled = !enabled || (spec.allowed !== undefined && !spec.allowed(kind, state.current));
      }
    }

    // ---------------------------------------------------------------------------------------- prefetch
    function prepare(item) {
      const entry = state.images.get(item.image_id, item.image_url);
      const needed = new Set(state.queue.map((it) => it.image_id));
      if (state.current) needed.add(state.current.image_id);
      state.images.trim(needed);
      if (spec.prepare) spec.prepare(item);
      return entry;
    }

    // ---------------------------------------------------------------------------------------- flow
    function advance() {
      const item = state.queue.shift() || null;
      state.current = item;
      if (!item) {
        const waiting = state.inflight.size || state.fetching;
        show(waiting ? "work" : "empty");
        setOverlay(waiting ? text.loadingNext : null);
        setButtons(false);
        refill();
        return;
      }
      show("work");
      spec.describe(item);
      const entry = prepare(item);
      if (entry.ready) {
        drawNow();
      } else {
        setOverlay("Loading image…");
        setButtons(false);
        entry.promise.then(() => { if (state.current === item) drawNow(); })
          .catch(() => { if (state.current === item) setOverlay(`Image ${item.image_id} could not be loaded`); });
      }
    }

    function drawNow() {
      setOverlay(null);
      setButtons(true);
      spec.render();
      if (state.keyAt !== null) {
        const started = state.keyAt;
        state.keyAt = null;
        requestAnimationFrame(() => state.timings.push(performance.now() - started));
      }
    }

    async function refill() {
      if (state.fetching) return state.fetching;
      state.fetching = (async () => {
        let again = false;
        try {
          const epoch = state.epoch;
          const response = await api(`${routes.next}?n=${DEPTH}`);
          if (!response.ok) throw new Error(await detail(response));
          const items = (await response.json())[fields.list];
          if (epoch !== state.epoch) {
            again = true;                     // an undo changed our leases meanwhile: this list is out of date
          } else {
            // The server's list is what still waits and is leased to us: items decided by someone else, or whose
            // lease ran out, drop out of the queue here.
            const ids = new Set(items.map(idOf));
            const shown = state.current;
            if (shown && !ids.has(idOf(shown)) && items.length < DEPTH) {
              state.current = null;             // the server had room for it, so it is no longer ours to decide
              toast(`${text.taken(idOf(shown))}${state.queue.length || items.length ? "; here is the next one" : ""}`);
            }
            const keep = state.current ? idOf(state.current) : null;
            state.queue = items.filter((it) => !state.settled.has(idOf(it)) && idOf(it) !== keep);
            for (const it of state.queue) prepare(it);
          }
        } catch (err) {
          if (!(err instanceof AuthError)) toast(`${text.fetchFailed}: ${err.message}`);
        } finally {
          state.fetching = null;
        }
        if (again) return refill();
        if (!state.current) {
          if (state.queue.length) advance();
          else if (!state.inflight.size) { showEmpty(); schedulePoll(); }
        }
      })();
      return state.fetching;
    }

    function schedulePoll() {
      clearTimeout(state.pollTimer);
      state.pollTimer = setTimeout(() => { if (!state.current) { refill(); refreshProgress(); } }, POLL_MS);
    }

    function decide(kind) {
      const item = state.current;
      if (!item || $(`btn-${kind}`).disabled) {
        if (item && spec.blocked) spec.blocked(kind, item);
        return;
      }
      state.keyAt = performance.now();
      state.settled.add(idOf(item));
      press(kind);
      spec.bump(kind);
      advance();
      send(item, kind);
    }

    function send(item, kind) {
      const request = (async () => {
        try {
          const response = await api(routes.send, {
            method: "POST", body: JSON.stringify({ [fields.id]: idOf(item), [fields.kind]: kind }),
          });
          if (response.ok) state.mine += 1;
          else await spec.notStored(response, item);
        } catch (err) {
          if (err instanceof AuthError) return;
          // Unknown whether it was stored: decide it again (the page's notStored says what a repeat gets back).
          state.settled.delete(idOf(item));
          if (state.current) state.queue.unshift(state.current);
          state.current = null;
          state.queue.unshift(item);
          advance();
          toast(text.unconfirmed(idOf(item)));
        }
      })();
      state.inflight.add(request);
      request.finally(() => {
        state.inflight.delete(request);
        refill();
        refreshProgress();
        renderSession();
      });
    }

    async function undo() {
      if (state.undoing) return;
      state.undoing = true;
      try {
        await Promise.allSettled([...state.inflight]);   // undo what was really stored last
        state.epoch += 1;
        const response = await api(routes.undo, { method: "POST" });
        state.epoch += 1;
        if (!response.ok) {
          toast(response.status === 404 ? "Nothing to undo" : await detail(response), spec.errorMs);
          return;
        }
        const body = await response.json();
        state.mine = Math.max(0, state.mine - 1);
        spec.undone(body, reopen);
      } catch (err) {
        if (!(err instanceof AuthError)) toast(`Undo failed: ${err.message}`);
      } finally {
        state.undoing = false;
        refreshProgress();
        renderSession();
      }
    }

    // Show `item` again, first, and drop it and the items with ids in `drop` from the queue.
    function reopen(item, drop = []) {
      const gone = new Set([idOf(item), ...drop]);
      state.settled.delete(idOf(item));
      state.queue = state.queue.filter((it) => !gone.has(idOf(it)));
      if (state.current && !gone.has(idOf(state.current))) state.queue.unshift(state.current);
      state.queue.unshift(item);
      state.current = null;
      advance();
    }

    function press(kind) {
      const button = $(`btn-${kind}`);
      button.classList.add("pressed");
      setTimeout(() => button.classList.remove("pressed"), 120);
    }

    // ---------------------------------------------------------------------------------------- progress
    // At most one progress request per 300 ms; a call inside that window is run at its end.
    const refreshProgress = throttled(async () => {
      try {
        const response = await api(routes.progress);
        if (response.ok) {
          state.progress = await response.json();
          spec.renderProgress();
        }
      } catch (_) { /* shown by the next request that fails */ }
    }, 300);

    function renderSession() {
      $("session").textContent = state.mine
        ? `${state.mine} ${text.noun}${state.mine > 1 ? "s" : ""} from you in this session` : "";
    }

    // ---------------------------------------------------------------------------------------- input
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const tag = event.target && event.target.tagName;
      if (tag === "INPUT" || tag === "TEXTAREA") return;
      const action = keys[event.key];
      if (!action) return;
      event.preventDefault();
      if (event.repeat) return;               // a held key acts once
      if (action === "undo") undo();
      else if (actions[action]) actions[action]();
      else decide(action);
    });

    for (const button of document.querySelectorAll("button.answer")) {
      button.addEventListener("click", () => { button.blur(); decide(button.dataset[fields.kind]); });
    }
    for (const id of ["btn-undo", "btn-undo-empty"]) {
      $(id).addEventListener("click", (event) => { event.currentTarget.blur(); undo(); });
    }

    window.addEventListener("resize", () => spec.render());
    window.addEventListener("pagehide", () => {
      const ids = state.queue.map(idOf);
      if (state.current) ids.push(idOf(state.current));
      if (ids.length) {
        navigator.sendBeacon(routes.release,
          new Blob([JSON.stringify({ [fields.ids]: ids.slice(0, 50) })], { type: "application/json" }));
      }
    });

    // ---------------------------------------------------------------------------------------- start
    async function start() {
      try {
        const response = await api("/api/me");
        state.me = await response.json();
        spec.welcome(state.me);
      } catch (_) {
        return;
      }
      setInterval(() => { if (!document.hidden) refreshProgress(); }, PROGRESS_MS);
      refreshProgress();
      refill();
    }

    return { state, start };
  }

  return {
    AuthError, ImageCache, api, cssVar, detail, drawCrop, duration, fitCanvas, renderContext, strokeTwice, throttled,
    toast, workLoop,
  };
})();
