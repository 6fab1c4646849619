// The apis labelling page: one yes/no question at a time about one pixel of one object.
//
// Frames: a question's box is xyxy and its point (x, y) an integer pixel (column, row), both in original-image
// pixels; pixel (i, j) covers [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5). The page draws a crop
// of the image around the box, scaled up, and marks that centre.
//
// Speed: DEPTH questions are leased ahead and their images decoded before they are needed, so answering
// switches to the next question without waiting for the network; the answer is sent in the background and
// confirmed (or reported) when the server replies.
"use strict";

(() => {
  const {
    AuthError, ImageCache, api, detail, duration, fitCanvas, renderContext, strokeTwice, toast,
  } = window.apisCommon;
  const DEPTH = 4;            // questions held: the one shown and the ones prefetched
  const IMAGE_CACHE = 48;     // decoded images kept
  const POLL_MS = 4000;       // re-ask for questions this often while there are none
  const PROGRESS_MS = 5000;   // refresh the progress bar at least this often

  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const context = $("context");

  const state = {
    me: null,
    current: null,
    queue: [],
    settled: new Set(),      // query ids answered here (so a late lease renewal never shows them again)
    images: new ImageCache(IMAGE_CACHE),
    inflight: new Set(),     // answer requests not yet confirmed
    fetching: null,
    keyAt: null,
    timings: [],             // ms from an answer key to the next question drawn (the frame after)
    progress: null,
    mine: 0,
    pollTimer: null,
    epoch: 0,                // bumped by undo, so a question list fetched before it is not trusted
    undoing: false,
  };
  window.__apis = state;     // read by tests and handy in the console

  window.apisCommon.setLoggedOut(() => show("login"));

  // ------------------------------------------------------------------------------------------ screens
  function show(which) {
    $("work").hidden = which !== "work";
    $("empty").hidden = which !== "empty";
    $("login").hidden = which !== "login";
  }

  // ------------------------------------------------------------------------------------------ images
  function image(q) {
    const entry = state.images.get(q.image_id, q.image_url);
    const needed = new Set(state.queue.map((item) => item.image_id));
    if (state.current) needed.add(state.current.image_id);
    state.images.trim(needed);
    return entry;
  }

  // ------------------------------------------------------------------------------------------ drawing
  // The crop shown: the box plus a margin of half its larger side (at least 8 px), inside the image.
  function cropOf(q) {
    const [x0, y0, x1, y1] = q.box;
    const m = Math.max(8, 0.5 * Math.max(x1 - x0, y1 - y0));
    const cx0 = Math.max(0, Math.floor(x0 - m));
    const cy0 = Math.max(0, Math.floor(y0 - m));
    const cx1 = Math.min(q.width, Math.ceil(x1 + m));
    const cy1 = Math.min(q.height, Math.ceil(y1 + m));
    return { x: cx0, y: cy0, w: Math.max(1, cx1 - cx0), h: Math.max(1, cy1 - cy0) };
  }

  function render() {
    const q = state.current;
    if (!q) return;
    const entry = state.images.peek(q.image_id);
    if (!entry || !entry.ready) return;
    const dpr = fitCanvas(view);
    const ctx = view.getContext("2d");
    const W = view.width;
    const H = view.height;
    const pad = 16 * dpr;
    const crop = cropOf(q);
    const s = Math.min((W - 2 * pad) / crop.w, (H - 2 * pad) / crop.h);
    const ox = (W - crop.w * s) / 2;
    const oy = (H - crop.h * s) / 2;
    const X = (x) => ox + (x - crop.x) * s;   // image x (pixels, continuous) -> canvas x
    const Y = (y) => oy + (y - crop.y) * s;

    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0c0d10";
    ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = s < 3;       // enlarged: show the real pixels, so "this pixel" is exact
    ctx.drawImage(entry.img, crop.x, crop.y, crop.w, crop.h, ox, oy, crop.w * s, crop.h * s);

    // Dim what lies outside the box, a little: the object is in the box.
    const [bx0, by0, bx1, by1] = q.box;
    ctx.fillStyle = "rgba(0,0,0,0.28)";
    ctx.beginPath();
    ctx.rect(ox, oy, crop.w * s, crop.h * s);
    ctx.rect(X(bx0), Y(by0), (bx1 - bx0) * s, (by1 - by0) * s);
    ctx.fill("evenodd");

    const box = new Path2D();
    box.rect(X(bx0), Y(by0), (bx1 - bx0) * s, (by1 - by0) * s);
    strokeTwice(ctx, box, 3.5 * dpr, { color: "#ffffff", width: 1.6 * dpr }, [7 * dpr, 5 * dpr]);

    // The point: pixel centre, a ring around it and crosshair arms that stop short of it.
    const px = X(q.x + 0.5);
    const py = Y(q.y + 0.5);
    const ring = Math.max(13 * dpr, 1.2 * s);
    const arm = 22 * dpr;
    const cross = new Path2D();
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      cross.moveTo(px + dx * (ring + 4 * dpr), py + dy * (ring + 4 * dpr));
      cross.lineTo(px + dx * (ring + 4 * dpr + arm), py + dy * (ring + 4 * dpr + arm));
    }
    strokeTwice(ctx, cross, 6 * dpr, { color: "#ffffff", width: 2.5 * dpr });
    const circle = new Path2D();
    circle.arc(px, py, ring, 0, 2 * Math.PI);
    strokeTwice(ctx, circle, 6 * dpr, { color: getAccent(), width: 3 * dpr });
    if (s >= 6) {                             // the pixel itself, when it is big enough to outline
      const cell = new Path2D();
      cell.rect(X(q.x), Y(q.y), s, s);
      strokeTwice(ctx, cell, 3 * dpr, { color: "#ffffff", width: 1.2 * dpr });
    }
    renderContext(context, entry.img, q.width, q.height, crop, q.box, getAccent());
  }

  let accent = null;
  function getAccent() {
    if (!accent) accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#ff3df2";
    return accent;
  }

  function describe(q) {
    $("category").textContent = q.category;
    $("meta-query").textContent = `#${q.query_id} (step ${q.step}${q.replaces ? `, after "can't tell" on #${q.replaces}` : ""})`;
    $("meta-image").textContent = `${q.image_id} (${q.width}×${q.height})`;
    $("meta-pixel").textContent = `(${q.x}, ${q.y})`;
  }

  // ------------------------------------------------------------------------------------------ flow
  function advance() {
    const q = state.queue.shift() || null;
    state.current = q;
    if (!q) {
      show(state.inflight.size || state.fetching ? "work" : "empty");
      setOverlay(state.inflight.size || state.fetching ? "Loading the next question…" : null);
      setButtons(false);
      refill();
      return;
    }
    show("work");
    describe(q);
    const entry = image(q);
    if (entry.ready) {
      drawNow();
    } else {
      setOverlay("Loading image…");
      setButtons(false);
      entry.promise.then(() => { if (state.current === q) drawNow(); })
        .catch(() => { if (state.current === q) setOverlay(`Image ${q.image_id} could not be loaded`); });
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
    for (const id of ["btn-yes", "btn-no", "btn-skip"]) $(id).disabled = !enabled;
  }

  async function refill() {
    if (state.fetching) return state.fetching;
    state.fetching = (async () => {
      let again = false;
      try {
        const epoch = state.epoch;
        const response = await api(`/api/next?n=${DEPTH}`);
        if (!response.ok) throw new Error(await detail(response));
        const { questions } = await response.json();
        if (epoch !== state.epoch) {
          again = true;                     // an undo changed our leases meanwhile: this list is out of date
        } else {
          // The server's list is what is still open and leased to us: questions answered by someone else, or
          // whose lease ran out, drop out of the queue here.
          const ids = new Set(questions.map((q) => q.query_id));
          const shown = state.current;
          if (shown && !ids.has(shown.query_id) && questions.length < DEPTH) {
            state.current = null;             // the server had room for it, so it is no longer ours to answer
            toast(`Question #${shown.query_id} was answered by someone else${state.queue.length || questions.length
              ? "; here is the next one" : ""}`);
          }
          const keep = state.current ? state.current.query_id : null;
          state.queue = questions.filter((q) => !state.settled.has(q.query_id) && q.query_id !== keep);
          for (const q of state.queue) image(q);
        }
      } catch (err) {
        if (!(err instanceof AuthError)) toast(`Could not fetch questions: ${err.message}`);
      } finally {
        state.fetching = null;
      }
      if (again) return refill();
      if (!state.current) {
        if (state.queue.length) advance();
        else if (!state.inflight.size) { show("empty"); schedulePoll(); }
      }
    })();
    return state.fetching;
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(() => { if (!state.current) { refill(); refreshProgress(); } }, POLL_MS);
  }

  function answer(kind) {
    const q = state.current;
    if (!q || $("btn-yes").disabled) return;
    state.keyAt = performance.now();
    state.settled.add(q.query_id);
    press(kind);
    bump(kind);
    advance();
    send(q, kind);
  }

  function send(q, kind) {
    const request = (async () => {
      try {
        const response = await api("/api/answer", {
          method: "POST", body: JSON.stringify({ query_id: q.query_id, answer: kind }),
        });
        if (response.ok) {
          state.mine += 1;
        } else if (response.status === 409) {
          const body = await response.json();
          const stored = body.stored;
          toast(stored ? `Question #${q.query_id} was already answered (${stored.answer}) by ${stored.annotator}`
            : body.detail);
        } else {
          toast(`Answer to #${q.query_id} not stored: ${await detail(response)}`);
        }
      } catch (err) {
        if (err instanceof AuthError) return;
        // Unknown whether it was stored: ask again; a stored answer then comes back as "already answered".
        state.settled.delete(q.query_id);
        if (state.current) state.queue.unshift(state.current);
        state.current = null;
        state.queue.unshift(q);
        advance();
        toast(`The server did not confirm your answer to #${q.query_id}; please answer it again`);
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
      const response = await api("/api/undo", { method: "POST" });
      state.epoch += 1;
      if (!response.ok) {
        toast(response.status === 404 ? "Nothing to undo" : await detail(response));
        return;
      }
      const { question, removed } = await response.json();
      state.settled.delete(question.query_id);
      state.queue = state.queue.filter((q) => q.query_id !== question.query_id && q.query_id !== removed);
      if (state.current && state.current.query_id !== removed && state.current.query_id !== question.query_id) {
        state.queue.unshift(state.current);
      }
      state.queue.unshift(question);
      state.current = null;
      state.mine = Math.max(0, state.mine - 1);
      if (state.progress) {
        state.progress.done = Math.max(0, state.progress.done - 1);
        state.progress.open += 1;
        renderProgress();
      }
      advance();
      toast(`Undone: question #${question.query_id} is open again`, 2000);
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

  // ------------------------------------------------------------------------------------------ progress
  function bump(kind) {
    const p = state.progress;
    if (!p) return;
    if (kind !== "skip") { p.done += 1; p.open = Math.max(0, p.open - 1); }
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
      const response = await api("/api/progress");
      if (response.ok) {
        state.progress = await response.json();
        renderProgress();
      }
    } catch (_) { /* shown by the next request that fails */ }
  }

  function renderProgress() {
    const p = state.progress;
    if (!p) return;
    const total = p.done + p.open;
    $("bar-fill").style.width = total ? `${(100 * p.done / total).toFixed(1)}%` : "0%";
    const parts = [`<b>${p.done}</b> answered`, `<b>${p.open}</b> remaining`];
    parts.push(p.per_minute ? `<b>${p.per_minute.toFixed(1)}</b> answers/min` : "– answers/min");
    if (p.eta_s !== null && p.eta_s !== undefined && p.open) parts.push(`about <b>${duration(p.eta_s)}</b> left`);
    if (!p.open && total) parts.push("all done");
    $("stats").innerHTML = parts.join(" · ");
  }

  function renderSession() {
    $("session").textContent = state.mine ? `${state.mine} answer${state.mine > 1 ? "s" : ""} from you in this session` : "";
  }

  // ------------------------------------------------------------------------------------------ input
  const KEYS = {
    y: "yes", Y: "yes", ArrowRight: "yes",
    n: "no", N: "no", ArrowLeft: "no",
    s: "skip", S: "skip",
    u: "undo", U: "undo", Backspace: "undo",
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const action = KEYS[event.key];
    if (!action) return;
    event.preventDefault();
    if (event.repeat) return;               // a held key answers once
    if (action === "undo") undo();
    else answer(action);
  });

  for (const button of document.querySelectorAll("button.answer")) {
    button.addEventListener("click", () => { button.blur(); answer(button.dataset.answer); });
  }
  for (const id of ["btn-undo", "btn-undo-empty"]) {
    $(id).addEventListener("click", (event) => { event.currentTarget.blur(); undo(); });
  }

  window.addEventListener("resize", () => render());
  window.addEventListener("pagehide", () => {
    const ids = state.queue.map((q) => q.query_id);
    if (state.current) ids.push(state.current.query_id);
    if (ids.length) {
      navigator.sendBeacon("/api/release",
        new Blob([JSON.stringify({ query_ids: ids.slice(0, 50) })], { type: "application/json" }));
    }
  });

  // ------------------------------------------------------------------------------------------ start
  async function start() {
    try {
      const response = await api("/api/me");
      state.me = await response.json();
      $("who").textContent = `answering as ${state.me.annotator}`;
      if (state.me.review_step !== null && state.me.review_step !== undefined) {
        $("to-review").textContent = `Review the masks of step ${state.me.review_step} →`;
        $("to-review").hidden = false;
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
