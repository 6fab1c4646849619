// The apis review page: one exported mask at a time, lowest trust first; accept it, reject it (the object needs
// more points) or skip it.
//
// Frames: an item's box is xyxy in original-image pixels, pixel (i, j) covering [i, i+1) x [j, j+1); its crop
// [x0, y0, x1, y1] is the integer pixel window shown (columns x0..x1-1, rows y0..y1-1); its mask covers the crop,
// as row-major run lengths starting with pixels off the object; a point (x, y) is an integer pixel, drawn at its
// centre (x + 0.5, y + 0.5). The page scales the crop up to the stage and draws the mask over it.
//
// Speed: as on the question page, DEPTH objects are leased ahead, their images decoded and masks prepared before
// they are needed; a decision is sent in the background and confirmed (or reported) when the server replies.
"use strict";

(() => {
  const {
    AuthError, ImageCache, api, cssVar, detail, duration, fitCanvas, renderContext, strokeTwice, toast,
  } = window.apisCommon;
  const DEPTH = 4;            // objects held: the one shown and the ones prefetched
  const IMAGE_CACHE = 48;     // decoded images kept
  const POLL_MS = 4000;       // re-ask for objects this often while there are none
  const PROGRESS_MS = 5000;   // refresh the progress bar at least this often
  const MASK_ALPHA = 0.45;    // opacity of the mask's fill
  const MASK_VIEWS = ["fill and outline", "outline only", "hidden"];
  const SOURCES = {
    prediction_set: "the model's prediction set",
    detection: "an overlapping detection (no prediction set)",
    missing: "none: the model found nothing here",
    reviewed: "a mask a person accepted earlier",
  };
  const PAST = { accept: "accepted", reject: "rejected", skip: "skipped" };

  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const context = $("context");
  const colors = {};

  const state = {
    me: null,
    current: null,
    queue: [],
    settled: new Set(),      // instance ids decided here (so a late lease renewal never shows them again)
    images: new ImageCache(IMAGE_CACHE),
    masks: new Map(),        // instance_id -> {fill: canvas, outline: Path2D, pixels}
    inflight: new Set(),     // decisions not yet confirmed
    fetching: null,
    keyAt: null,
    timings: [],             // ms from a decision key to the next object drawn (the frame after)
    progress: null,
    mine: 0,
    pollTimer: null,
    epoch: 0,                // bumped by undo, so a list fetched before it is not trusted
    undoing: false,
    maskView: 0,             // index into MASK_VIEWS
  };
  window.__apisReview = state;   // read by tests and handy in the console

  window.apisCommon.setLoggedOut(() => show("login"));

  // ------------------------------------------------------------------------------------------ screens
  function show(which) {
    $("work").hidden = which !== "work";
    $("empty").hidden = which !== "empty";
    $("login").hidden = which !== "login";
  }

  function color(name, fallback) {
    if (!colors[name]) colors[name] = cssVar(name, fallback);
    return colors[name];
  }

  // ------------------------------------------------------------------------------------------ prefetch
  function prepare(item) {
    const entry = state.images.get(item.image_id, item.image_url);
    maskOf(item);
    const needed = new Set(state.queue.map((it) => it.image_id));
    if (state.current) needed.add(state.current.image_id);
    state.images.trim(needed);
    const keep = new Set(state.queue.map((it) => it.instance_id));
    if (state.current) keep.add(state.current.instance_id);
    keep.add(item.instance_id);
    for (const id of state.masks.keys()) if (!keep.has(id)) state.masks.delete(id);
    return entry;
  }

  // The mask over the crop, as a canvas of the crop's size (the fill, opaque; drawn translucent) and its outline:
  // the pixel edges between the mask and the rest, in crop pixel units.
  function maskOf(item) {
    let m = state.masks.get(item.instance_id);
    if (m) return m;
    const [x0, y0, x1, y1] = item.crop;
    const w = x1 - x0;
    const h = y1 - y0;
    const bits = new Uint8Array(w * h);
    let pixels = 0;
    if (item.mask) {
      let at = 0;
      let on = false;
      for (const run of item.mask) {
        if (on) { bits.fill(1, at, at + run); pixels += run; }
        at += run;
        on = !on;
      }
    }
    const fill = document.createElement("canvas");
    fill.width = w;
    fill.height = h;
    const ctx = fill.getContext("2d");
    const image = ctx.createImageData(w, h);
    const rgb = hexRgb(color("--mask", "#ff3df2"));
    for (let i = 0; i < bits.length; i++) {
      if (!bits[i]) continue;
      image.data[4 * i] = rgb[0];
      image.data[4 * i + 1] = rgb[1];
      image.data[4 * i + 2] = rgb[2];
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    m = { fill, outline: outlineOf(bits, w, h), pixels };
    state.masks.set(item.instance_id, m);
    return m;
  }

  function outlineOf(bits, w, h) {
    const at = (x, y) => (x >= 0 && y >= 0 && x < w && y < h ? bits[y * w + x] : 0);
    const path = new Path2D();
    for (let y = 0; y <= h; y++) {            // edges on the line between rows y - 1 and y, merged along x
      let start = -1;
      for (let x = 0; x <= w; x++) {
        const edge = x < w && at(x, y - 1) !== at(x, y);
        if (edge && start < 0) start = x;
        if (!edge && start >= 0) { path.moveTo(start, y); path.lineTo(x, y); start = -1; }
      }
    }
    for (let x = 0; x <= w; x++) {            // edges on the line between columns x - 1 and x, merged along y
      let start = -1;
      for (let y = 0; y <= h; y++) {
        const edge = y < h && at(x - 1, y) !== at(x, y);
        if (edge && start < 0) start = y;
        if (!edge && start >= 0) { path.moveTo(x, start); path.lineTo(x, y); start = -1; }
      }
    }
    return path;
  }

  function hexRgb(hex) {
    const v = parseInt(hex.replace("#", ""), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  // ------------------------------------------------------------------------------------------ drawing
  function render() {
    const it = state.current;
    if (!it) return;
    const entry = state.images.peek(it.image_id);
    if (!entry || !entry.ready) return;
    const dpr = fitCanvas(view);
    const ctx = view.getContext("2d");
    const W = view.width;
    const H = view.height;
    const pad = 16 * dpr;
    const [cx0, cy0, cx1, cy1] = it.crop;
    const cw = cx1 - cx0;
    const ch = cy1 - cy0;
    const s = Math.min((W - 2 * pad) / cw, (H - 2 * pad) / ch);
    const ox = (W - cw * s) / 2;
    const oy = (H - ch * s) / 2;
    const X = (x) => ox + (x - cx0) * s;     // image x (pixels, continuous) -> canvas x
    const Y = (y) => oy + (y - cy0) * s;

    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0c0d10";
    ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = s < 3;        // enlarged: show the real pixels, as the mask is made of them
    ctx.drawImage(entry.img, cx0, cy0, cw, ch, ox, oy, cw * s, ch * s);

    const mask = maskOf(it);
    if (state.maskView === 0) {
      ctx.save();
      ctx.globalAlpha = MASK_ALPHA;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(mask.fill, ox, oy, cw * s, ch * s);
      ctx.restore();
    }
    if (state.maskView < 2) {
      ctx.save();
      ctx.setTransform(s, 0, 0, s, ox, oy);   // the outline is in crop pixels: widths are divided by s
      ctx.lineCap = "square";
      strokeTwice(ctx, mask.outline, 3.5 * dpr / s, { color: color("--mask-line", "#ffffff"), width: 1.6 * dpr / s });
      ctx.restore();
    }

    const [bx0, by0, bx1, by1] = it.box;
    const box = new Path2D();
    box.rect(X(bx0), Y(by0), (bx1 - bx0) * s, (by1 - by0) * s);
    strokeTwice(ctx, box, 3 * dpr, { color: "#ffffff", width: 1.2 * dpr }, [7 * dpr, 5 * dpr]);

    const r = Math.max(7 * dpr, Math.min(0.45 * s, 12 * dpr));
    for (const p of it.points) {
      const px = X(p.x + 0.5);
      const py = Y(p.y + 0.5);
      const dot = new Path2D();
      dot.arc(px, py, r, 0, 2 * Math.PI);
      ctx.fillStyle = p.label ? color("--yes-point", "#2ee07f") : color("--no-point", "#ff4545");
      ctx.fill(dot);
      strokeTwice(ctx, dot, 3.5 * dpr, { color: "#ffffff", width: 1.5 * dpr });
      const sign = new Path2D();               // + for yes, − for no: not by colour alone
      sign.moveTo(px - 0.5 * r, py);
      sign.lineTo(px + 0.5 * r, py);
      if (p.label) { sign.moveTo(px, py - 0.5 * r); sign.lineTo(px, py + 0.5 * r); }
      ctx.strokeStyle = "#0c0d10";
      ctx.lineWidth = 1.6 * dpr;
      ctx.stroke(sign);
    }
    renderContext(context, entry.img, it.width, it.height, { x: cx0, y: cy0, w: cw, h: ch }, it.box,
      color("--mask", "#ff3df2"));
  }

  function describe(it) {
    $("category").textContent = it.category;
    const score = it.apis_score;
    $("trust-value").textContent = score.toFixed(2);
    $("trust-fill").style.width = `${(100 * score).toFixed(1)}%`;
    $("trust-fill").style.background = `hsl(${Math.round(120 * score)}, 65%, 45%)`;
    $("meta-object").textContent = `#${it.instance_id} (step ${it.step})`;
    $("meta-image").textContent = `${it.image_id} (${it.width}×${it.height})`;
    const source = SOURCES[it.apis_source] || it.apis_source;
    $("meta-source").textContent = it.mask ? `${it.area} px, from ${source}` : source;
    const yes = it.points.filter((p) => p.label).length;
    const no = it.points.length - yes;
    const agree = it.points_agree === null ? "" : `; the model agreed with ${Math.round(100 * it.points_agree)}%`;
    $("meta-points").textContent = it.points.length ? `${yes} yes, ${no} no${agree}` : "none answered";
    const prev = it.previous;
    $("meta-previous").textContent = prev ? `${PAST[prev.decision]} at step ${prev.step} by ${prev.reviewer}` : "–";
  }

  // ------------------------------------------------------------------------------------------ flow
  function advance() {
    const it = state.queue.shift() || null;
    state.current = it;
    if (!it) {
      const waiting = state.inflight.size || state.fetching;
      show(waiting ? "work" : "empty");
      setOverlay(waiting ? "Loading the next mask…" : null);
      setButtons(false);
      refill();
      return;
    }
    show("work");
    describe(it);
    const entry = prepare(it);
    if (entry.ready) {
      drawNow();
    } else {
      setOverlay("Loading image…");
      setButtons(false);
      entry.promise.then(() => { if (state.current === it) drawNow(); })
        .catch(() => { if (state.current === it) setOverlay(`Image ${it.image_id} could not be loaded`); });
    }
  }

  function drawNow() {
    setOverlay(null);
    setButtons(true);
    render();
    if (state.keyAt !== null) {
      const started = state.keyAt;
      state.keyAt = null;
      requestAnimationFrame(() => state.timings.push(performance.now() - started));
    }
  }

  function setOverlay(text) {
    const el = $("overlay");
    el.hidden = !text;
    el.textContent = text || "";
  }

  function setButtons(enabled) {
    $("btn-reject").disabled = !enabled;
    $("btn-skip").disabled = !enabled;
    $("btn-accept").disabled = !enabled || !state.current || !state.current.mask;
  }

  async function refill() {
    if (state.fetching) return state.fetching;
    state.fetching = (async () => {
      let again = false;
      try {
        const epoch = state.epoch;
        const response = await api(`/api/review/next?n=${DEPTH}`);
        if (!response.ok) throw new Error(await detail(response));
        const { items } = await response.json();
        if (epoch !== state.epoch) {
          again = true;                       // an undo changed our leases meanwhile: this list is out of date
        } else {
          // The server's list is what still waits and is leased to us: objects decided by someone else, or whose
          // lease ran out, drop out of the queue here.
          const ids = new Set(items.map((it) => it.instance_id));
          const shown = state.current;
          if (shown && !ids.has(shown.instance_id) && items.length < DEPTH) {
            state.current = null;             // the server had room for it, so it is no longer ours to decide
            toast(`Object #${shown.instance_id} was decided by someone else${state.queue.length || items.length
              ? "; here is the next one" : ""}`);
          }
          const keep = state.current ? state.current.instance_id : null;
          state.queue = items.filter((it) => !state.settled.has(it.instance_id) && it.instance_id !== keep);
          for (const it of state.queue) prepare(it);
        }
      } catch (err) {
        if (!(err instanceof AuthError)) toast(`Could not fetch masks to review: ${err.message}`);
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

  function showEmpty() {
    show("empty");
    const p = state.progress;
    $("empty-text").textContent = p && p.remaining
      ? `${p.remaining} of the ${p.total} masks of step ${p.step} wait for a decision: with other reviewers, or ` +
        "skipped by you. They appear here when their lease runs out; undo brings back your last one."
      : "Every mask of this step has been decided.";
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(() => { if (!state.current) { refill(); refreshProgress(); } }, POLL_MS);
  }

  function decide(kind) {
    const it = state.current;
    if (!it || $(`btn-${kind}`).disabled) {
      if (it && kind === "accept" && !it.mask) {
        toast("There is no mask to accept: reject it (R) to ask for more points, or skip it (S)");
      }
      return;
    }
    state.keyAt = performance.now();
    state.settled.add(it.instance_id);
    press(kind);
    bump(kind);
    advance();
    send(it, kind);
  }

  function send(it, kind) {
    const request = (async () => {
      try {
        const response = await api("/api/review/decide", {
          method: "POST", body: JSON.stringify({ instance_id: it.instance_id, decision: kind }),
        });
        if (response.ok) {
          state.mine += 1;
        } else {
          toast(`Your decision about #${it.instance_id} was not stored: ${await detail(response)}`, 6000);
        }
      } catch (err) {
        if (err instanceof AuthError) return;
        // Unknown whether it was stored: decide again; the same decision stored already is confirmed as it is.
        state.settled.delete(it.instance_id);
        if (state.current) state.queue.unshift(state.current);
        state.current = null;
        state.queue.unshift(it);
        advance();
        toast(`The server did not confirm your decision about #${it.instance_id}; please decide again`);
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
      const response = await api("/api/review/undo", { method: "POST" });
      state.epoch += 1;
      if (!response.ok) {
        toast(response.status === 404 ? "Nothing to undo" : await detail(response), 6000);
        return;
      }
      const { undone, item } = await response.json();
      state.mine = Math.max(0, state.mine - 1);
      if (!item) {
        toast(`Undone: your ${undone.decision} of #${undone.instance_id} at step ${undone.step} (not reviewed here)`);
        return;
      }
      state.settled.delete(item.instance_id);
      state.queue = state.queue.filter((it) => it.instance_id !== item.instance_id);
      if (state.current && state.current.instance_id !== item.instance_id) state.queue.unshift(state.current);
      state.queue.unshift(item);
      state.current = null;
      advance();
      toast(`Undone: your ${undone.decision} of #${item.instance_id}`, 2000);
    } catch (err) {
      if (!(err instanceof AuthError)) toast(`Undo failed: ${err.message}`);
    } finally {
      state.undoing = false;
      refreshProgress();
      renderSession();
    }
  }

  function press(kind) {
    const button = $(`btn-${kind}`);
    button.classList.add("pressed");
    setTimeout(() => button.classList.remove("pressed"), 120);
  }

  function cycleMask() {
    state.maskView = (state.maskView + 1) % MASK_VIEWS.length;
    const button = $("btn-mask");
    button.firstChild.textContent = `Mask: ${MASK_VIEWS[state.maskView]} `;
    button.setAttribute("aria-pressed", String(state.maskView < 2));
    render();
  }

  // ------------------------------------------------------------------------------------------ progress
  function bump(kind) {
    const p = state.progress;
    if (!p || kind === "skip") return;
    p[kind === "accept" ? "accepted" : "rejected"] += 1;
    p.reviewed += 1;
    p.remaining = Math.max(0, p.remaining - 1);
    p.accepted_share = p.total ? p.accepted / p.total : 0;
    renderProgress();
  }

  // At most one progress request per 300 ms; a call inside that window is run at its end.
  let progressAsked = 0;
  let progressLater = null;
  async function refreshProgress() {
    const wait = progressAsked + 300 - Date.now();
    if (wait > 0) {
      if (!progressLater) progressLater = setTimeout(() => { progressLater = null; refreshProgress(); }, wait);
      return;
    }
    progressAsked = Date.now();
    try {
      const response = await api("/api/review/progress");
      if (response.ok) {
        state.progress = await response.json();
        renderProgress();
      }
    } catch (_) { /* shown by the next request that fails */ }
  }

  function renderProgress() {
    const p = state.progress;
    if (!p) return;
    const part = (n) => (p.total ? `${(100 * n / p.total).toFixed(1)}%` : "0%");
    $("bar-accepted").style.width = part(p.accepted);
    $("bar-rejected").style.width = part(p.rejected);
    const parts = [`<b>${p.reviewed}</b> reviewed`, `<b>${p.remaining}</b> remaining`,
      `<b>${p.accepted}</b> accepted (${Math.round(100 * p.accepted_share)}% of the pool)`, `<b>${p.rejected}</b> rejected`];
    parts.push(p.per_minute ? `<b>${p.per_minute.toFixed(1)}</b>/min` : "–/min");
    if (p.eta_s !== null && p.eta_s !== undefined && p.remaining) parts.push(`about <b>${duration(p.eta_s)}</b> left`);
    if (!p.remaining && p.total) parts.push("all reviewed");
    $("stats").innerHTML = parts.join(" · ");
  }

  function renderSession() {
    $("session").textContent = state.mine
      ? `${state.mine} decision${state.mine > 1 ? "s" : ""} from you in this session` : "";
  }

  // ------------------------------------------------------------------------------------------ input
  const KEYS = {
    a: "accept", A: "accept", ArrowRight: "accept",
    r: "reject", R: "reject", ArrowLeft: "reject",
    s: "skip", S: "skip",
    u: "undo", U: "undo", Backspace: "undo",
    m: "mask", M: "mask",
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const action = KEYS[event.key];
    if (!action) return;
    event.preventDefault();
    if (event.repeat) return;               // a held key decides once
    if (action === "undo") undo();
    else if (action === "mask") cycleMask();
    else decide(action);
  });

  for (const button of document.querySelectorAll("button.answer")) {
    button.addEventListener("click", () => { button.blur(); decide(button.dataset.decision); });
  }
  for (const id of ["btn-undo", "btn-undo-empty"]) {
    $(id).addEventListener("click", (event) => { event.currentTarget.blur(); undo(); });
  }
  $("btn-mask").addEventListener("click", (event) => { event.currentTarget.blur(); cycleMask(); });

  window.addEventListener("resize", () => render());
  window.addEventListener("pagehide", () => {
    const ids = state.queue.map((it) => it.instance_id);
    if (state.current) ids.push(state.current.instance_id);
    if (ids.length) {
      navigator.sendBeacon("/api/review/release",
        new Blob([JSON.stringify({ instance_ids: ids.slice(0, 50) })], { type: "application/json" }));
    }
  });

  // ------------------------------------------------------------------------------------------ start
  async function start() {
    try {
      const response = await api("/api/me");
      state.me = await response.json();
      $("who").textContent = `reviewing as ${state.me.annotator}`;
      if (state.me.review_step !== null) {
        $("title").textContent = `review · step ${state.me.review_step}`;
        document.title = `apis — review masks of step ${state.me.review_step}`;
      }
    } catch (_) {
      return;
    }
    setInterval(() => { if (!document.hidden) refreshProgress(); }, PROGRESS_MS);
    refreshProgress();
    refill();
  }

  start();
})();
