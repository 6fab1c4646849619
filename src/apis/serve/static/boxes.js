// The apis box page: people draw the boxes of a project that starts from images alone, one image at a time.
//
// Frames: a box is [x0, y0, x1, y1] floats in pixels of the image as shown (EXIF orientation applied); pixel (i, j)
// covers [i, i+1) x [j, j+1), so the whole image is [0, 0, width, height]. The canvas shows the whole image scaled
// to fit, less a margin (common.js drawCrop): a pointer at (cx, cy) CSS px of the canvas is at the image point
// ((cx - ox) / s, (cy - oy) / s), with s, ox, oy in state.layout.
//
// Saving: every change is an operation with the page's own id (op_id), sent one after another and sent again with
// the same id until the server answers (the server stores an operation once, however often it arrives). The
// server commits an operation before it answers, so a box is drawn as saved (solid) only once its last operation is
// confirmed, and dashed until then. A refused operation is reported, and the image is put back as the server has it.
"use strict";

(() => {
  const { AuthError, ImageCache, api, detail, drawCrop, duration, strokeTwice, throttled, toast } = window.apisCommon;
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const COLORS = ["#ff3df2", "#2ee0ff", "#ffd23d", "#7dff5a", "#ff8a3d", "#b78cff", "#ff5a7a", "#3dffb5", "#ffffff"];
  const GRAB = 9;             // CSS px: how near a corner the pointer grabs it
  const NUDGE_SEND_MS = 400;  // arrow keys: the nudged box is sent this long after the last nudge
  const RENEW_MS = 30000;     // ask /api/boxes/next this often: it renews the leases of the images held
  const LOOKAHEAD = 2;        // images held: the one shown and the next, its picture decoded ahead
  const r2 = (v) => Math.round(v * 100) / 100;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  const state = {
    me: null,
    categories: [],
    category: null,           // the category of the next box drawn
    images: new Map(),        // image_id -> {view, boxes: [{key, id, box, category_id, pending, dirty, gone}]}
    order: [],                // image ids to show, the shown one first
    current: null,            // image id shown
    doneHere: new Set(),      // images marked done on this page (the server may hold their lease a moment longer)
    selected: null,           // key of the selected box
    drag: null,               // {mode: draw | move | resize, ...} while the pointer is down
    ops: [],                  // operations not confirmed yet, oldest first; ops[0] is on the wire
    sending: false,
    retrying: false,
    progress: null,
    finished: null,           // what the server said when the boxes became the pool
    finishError: null,
    layout: null,             // {s, ox, oy} of the last drawing, CSS px (tests read it)
    mine: 0,                  // operations of this page the server confirmed
    nextKey: 1,
    nudgeTimer: null,
    pics: new ImageCache(8),
    fetching: null,
  };
  state.saved = () => state.ops.length === 0 && !state.nudgeTimer;
  window.__apisBoxes = state;

  const entry = () => (state.current === null ? null : state.images.get(state.current));
  const live = (e) => e.boxes.filter((b) => !b.gone);
  const byKey = (e, key) => e.boxes.find((b) => b.key === key);
  const categoryName = (id) => (state.categories.find((c) => c.id === id) || { name: `category ${id}` }).name;
  const color = (id) => COLORS[Math.max(0, state.categories.findIndex((c) => c.id === id)) % COLORS.length];

  function newOpId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);     // works on plain http too, unlike crypto.randomUUID
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------------------------------ operations
  function enqueue(kind, imageId, box, body) {
    const op = { op_id: newOpId(), kind, image_id: imageId, key: box ? box.key : null, body };
    if (box) box.pending += 1;
    state.ops.push(op);
    renderSaveState();
    pump();
  }

  async function pump() {
    if (state.sending) return;
    state.sending = true;
    let wait = 500;
    try {
      while (state.ops.length) {
        const op = state.ops[0];
        let response = null;
        try {
          response = await api(`/api/boxes/${op.kind}`, { method: "POST", body: JSON.stringify({ op_id: op.op_id, ...op.body() }) });
        } catch (err) {
          if (err instanceof AuthError) { screen("login"); return; }   // the operations wait for a login
        }
        if (response === null || response.status >= 500) {   // not known whether it was stored: the same id again
          state.retrying = true;
          renderSaveState();
          await new Promise((done) => setTimeout(done, wait));
          wait = Math.min(2 * wait, 8000);
          continue;
        }
        state.retrying = false;
        wait = 500;
        state.ops.shift();
        if (response.ok) confirmed(op, await response.json());
        else await refused(op, response);
        renderSaveState();
      }
    } finally {
      state.sending = false;
      renderSaveState();
    }
  }

  function confirmed(op, reply) {
    state.mine += 1;
    const id = reply.image.image_id;
    const e = state.images.get(id);
    const box = e && op.key !== null ? byKey(e, op.key) : null;
    if (box) {
      box.pending -= 1;
      if (op.kind === "add") box.id = reply.op.box_id;
      if (op.kind === "delete" && box.pending === 0) e.boxes = e.boxes.filter((b) => b !== box);
    }
    if (op.kind === "done") {
      state.images.delete(id);
      if (reply.finished) state.finished = reply.finished;
      if (reply.finish_error) { state.finishError = reply.finish_error; toast(reply.finish_error, 8000); }
    } else if (op.kind === "undo") {
      reopen(reply.image);
    } else if (e) {
      reconcile(e, reply.image);
    }
    refreshProgress();
    render();
  }

  async function refused(op, response) {
    const why = await detail(response);
    if (op.kind === "undo") {
      toast(response.status === 404 ? "Nothing to undo" : `Undo refused: ${why}`);
      return;
    }
    toast(`Not saved: ${why}`, 6000);
    if (response.status === 409 && /the boxes are the pool now/.test(why)) {   // finished elsewhere: nothing to draw
      state.ops = [];
      state.images.clear();
      state.order = [];
      state.current = null;
      setButtons(false);
      await refreshProgress();
      showEmpty();
      return;
    }
    // Whatever was queued after it on the same image assumed it was stored: drop it and show the server's state.
    state.ops = state.ops.filter((o) => o.image_id !== op.image_id);
    const imageId = op.image_id !== null ? op.image_id : state.current;
    try {
      const again = await api(`/api/boxes/images/${imageId}`);
      if (!again.ok) throw new Error(await detail(again));
      const server = await again.json();
      if (server.done || response.status === 409 && /being boxed by/.test(why)) drop(imageId);
      else reopen(server, true);
    } catch (err) {
      if (!(err instanceof AuthError)) drop(imageId);
    }
  }

  // The server's boxes of an image, keeping what this page has on its way (pending) and its keys (the selection).
  function reconcile(e, server, replace = false) {
    const mine = new Map(e.boxes.filter((b) => b.id !== null).map((b) => [b.id, b]));
    const out = [];
    for (const sb of server.boxes) {
      const b = mine.get(sb.id);
      if (b && !replace && (b.pending > 0 || b.dirty)) out.push(b);
      else out.push({ key: b ? b.key : state.nextKey++, id: sb.id, box: sb.box.slice(), category_id: sb.category_id,
        pending: 0, dirty: false, gone: false });
    }
    if (!replace) for (const b of e.boxes) if (b.id === null && b.pending > 0) out.push(b);
    e.boxes = out;
    e.view = server;
    if (state.selected !== null && !byKey(e, state.selected)) state.selected = null;
  }

  // Show an image the server gave back (an undo, a refusal) first.
  function reopen(server, replace = false) {
    const id = server.image_id;
    state.doneHere.delete(id);
    let e = state.images.get(id);
    if (!e) {
      e = { view: server, boxes: [] };
      state.images.set(id, e);
    }
    reconcile(e, server, replace);
    state.order = [id, ...state.order.filter((x) => x !== id)];
    if (state.current !== id) show(id);
    else render();
  }

  function drop(id) {
    state.images.delete(id);
    state.order = state.order.filter((x) => x !== id);
    if (state.current === id) advance();
  }

  // ------------------------------------------------------------------------------------------ actions
  function addBox(box) {
    const e = entry();
    const b = { key: state.nextKey++, id: null, box, category_id: state.category, pending: 0, dirty: false, gone: false };
    e.boxes.push(b);
    state.selected = b.key;
    const body = { image_id: e.view.image_id, box: box.slice(), category_id: b.category_id };
    enqueue("add", e.view.image_id, b, () => body);
  }

  function sendChange(e, b) {
    b.dirty = false;
    const box = b.box.slice();
    const category = b.category_id;
    enqueue("change", e.view.image_id, b, () => ({ box_id: b.id, box, category_id: category }));
  }

  function deleteSelected() {
    const e = entry();
    const b = e && state.selected !== null ? byKey(e, state.selected) : null;
    if (!b) { toast("Select a box first (click it, or Tab)"); return; }
    flushNudge();
    b.gone = true;
    state.selected = null;
    enqueue("delete", e.view.image_id, b, () => ({ box_id: b.id }));
    render();
  }

  function pickCategory(n) {
    const cat = state.categories[n];
    if (!cat) return;
    state.category = cat.id;
    const e = entry();
    const b = e && state.selected !== null ? byKey(e, state.selected) : null;
    if (b && b.category_id !== cat.id) {
      b.category_id = cat.id;
      flushNudge();
      sendChange(e, b);
    }
    renderSide();
    render();
  }

  function nudge(dx, dy) {
    const e = entry();
    const b = e && state.selected !== null ? byKey(e, state.selected) : null;
    if (!b) return;
    b.box = shifted(b.box, dx, dy, e.view);
    b.dirty = true;
    clearTimeout(state.nudgeTimer);
    state.nudgeTimer = setTimeout(flushNudge, NUDGE_SEND_MS);
    render();
  }

  function flushNudge() {
    if (!state.nudgeTimer) return;
    clearTimeout(state.nudgeTimer);
    state.nudgeTimer = null;
    for (const e of state.images.values()) for (const b of e.boxes) if (b.dirty && !b.gone) sendChange(e, b);
    renderSaveState();
  }

  function done() {
    const e = entry();
    if (!e || state.drag) return;
    flushNudge();
    const id = e.view.image_id;
    const empty = live(e).length === 0;
    enqueue("done", id, null, () => ({ image_id: id }));
    state.doneHere.add(id);
    state.order = state.order.filter((x) => x !== id);
    press("btn-done");
    if (empty) toast(`Image ${id} done with no object`, 2500);
    advance();
  }

  function undo() {
    if (state.drag) { state.drag = null; render(); return; }
    flushNudge();
    press("btn-undo");
    enqueue("undo", null, null, () => ({}));
  }

  function press(id) {
    const button = $(id);
    button.classList.add("pressed");
    setTimeout(() => button.classList.remove("pressed"), 120);
  }

  // ------------------------------------------------------------------------------------------ geometry
  function shifted(box, dx, dy, v) {
    const [x0, y0, x1, y1] = box;
    const ddx = Math.min(Math.max(dx, -x0), v.width - x1);
    const ddy = Math.min(Math.max(dy, -y0), v.height - y1);
    return [r2(x0 + ddx), r2(y0 + ddy), r2(x1 + ddx), r2(y1 + ddy)];
  }

  function ordered(ax, ay, bx, by) {
    return [r2(Math.min(ax, bx)), r2(Math.min(ay, by)), r2(Math.max(ax, bx)), r2(Math.max(ay, by))];
  }

  function toImage(event) {
    const rect = view.getBoundingClientRect();
    const { s, ox, oy } = state.layout;
    return [(event.clientX - rect.left - ox) / s, (event.clientY - rect.top - oy) / s];
  }

  function clamp(p, v) {
    return [Math.min(Math.max(p[0], 0), v.width), Math.min(Math.max(p[1], 0), v.height)];
  }

  // What the pointer at image point p would grab: a corner of a box (the selected one first), else the smallest
  // box it is inside.
  function hit(e, p) {
    const near = GRAB / state.layout.s;
    const boxes = live(e).sort((a, b) => (b.key === state.selected) - (a.key === state.selected));
    for (const b of boxes) {
      const [x0, y0, x1, y1] = b.box;
      for (const [corner, cx, cy] of [[0, x0, y0], [1, x1, y0], [2, x1, y1], [3, x0, y1]]) {
        if (Math.abs(p[0] - cx) <= near && Math.abs(p[1] - cy) <= near) return { mode: "resize", box: b, corner };
      }
    }
    const inside = live(e).filter((b) => p[0] >= b.box[0] && p[0] <= b.box[2] && p[1] >= b.box[1] && p[1] <= b.box[3]);
    inside.sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
    return inside.length ? { mode: "move", box: inside[0] } : null;
  }

  view.addEventListener("pointerdown", (event) => {
    const e = entry();
    if (!e || !state.layout || event.button !== 0) return;
    flushNudge();
    const p = toImage(event);
    const grab = hit(e, p);
    if (grab) {
      state.selected = grab.box.key;
      state.drag = { ...grab, start: p, orig: grab.box.box.slice() };
    } else {
      state.selected = null;
      const q = clamp(p, e.view);
      state.drag = { mode: "draw", start: q, now: q };
    }
    view.setPointerCapture(event.pointerId);
    renderSide();
    render();
  });

  view.addEventListener("pointermove", (event) => {
    const e = entry();
    if (!e || !state.layout) return;
    const p = toImage(event);
    const d = state.drag;
    if (!d) {
      const grab = hit(e, p);
      view.style.cursor = !grab ? "crosshair" : grab.mode === "move" ? "move"
        : grab.corner % 2 === 0 ? "nwse-resize" : "nesw-resize";
      return;
    }
    if (d.mode === "draw") d.now = clamp(p, e.view);
    else if (d.mode === "move") d.box.box = shifted(d.orig, p[0] - d.start[0], p[1] - d.start[1], e.view);
    else {
      const [x0, y0, x1, y1] = d.orig;
      const q = clamp(p, e.view);
      const fixed = [[x1, y1], [x0, y1], [x0, y0], [x1, y0]][d.corner];   // the corner opposite the one dragged
      d.box.box = ordered(fixed[0], fixed[1], q[0], q[1]);
    }
    render();
  });

  function endDrag() {
    const e = entry();
    const d = state.drag;
    state.drag = null;
    if (!e || !d) return;
    if (d.mode === "draw") {
      const box = ordered(d.start[0], d.start[1], d.now[0], d.now[1]);
      if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) addBox(box);
    } else {
      const b = d.box;
      const small = b.box[2] - b.box[0] < 1 || b.box[3] - b.box[1] < 1;
      if (small) { b.box = d.orig; toast("A box must be at least 1 pixel wide and high"); }
      else if (b.box.some((v, i) => Math.abs(v - d.orig[i]) >= 0.01)) sendChange(e, b);
    }
    renderSide();
    render();
  }
  view.addEventListener("pointerup", endDrag);
  view.addEventListener("pointercancel", () => { if (state.drag && state.drag.orig) state.drag.box.box = state.drag.orig; state.drag = null; render(); });

  // ------------------------------------------------------------------------------------------ images
  function show(id) {
    state.current = id;
    state.selected = null;
    state.drag = null;
    const e = state.images.get(id);
    const pic = state.pics.get(id, e.view.image_url);
    for (const next of state.order.slice(1)) { const n = state.images.get(next); if (n) state.pics.get(next, n.view.image_url); }
    screen("work");
    renderSide();
    setButtons(true);
    if (pic.ready) { setOverlay(null); render(); return; }
    setOverlay("Loading image…");
    pic.promise.then(() => { if (state.current === id) { setOverlay(null); render(); } })
      .catch(() => { if (state.current === id) setOverlay(`Image ${id} could not be loaded`); });
  }

  function advance() {
    const id = state.order[0];
    if (id !== undefined) { show(id); refill(); return; }
    state.current = null;
    setButtons(false);
    screen(state.ops.length ? "work" : "empty");
    setOverlay(state.ops.length ? "Saving…" : null);
    refill();
  }

  async function refill() {
    if (state.fetching) return state.fetching;
    state.fetching = (async () => {
      try {
        const response = await api(`/api/boxes/next?n=${LOOKAHEAD}`);
        if (!response.ok) throw new Error(await detail(response));
        const body = await response.json();
        state.categories = body.categories;
        if (state.category === null && body.categories.length) state.category = body.categories[0].id;
        for (const v of body.images) {
          if (state.images.has(v.image_id) || state.doneHere.has(v.image_id)) continue;
          const e = { view: v, boxes: [] };
          reconcile(e, v);
          state.images.set(v.image_id, e);
          state.order.push(v.image_id);
        }
        setProgress(body.progress);
      } catch (err) {
        if (err instanceof AuthError) screen("login");
        else toast(`Could not fetch images: ${err.message}`);
      } finally {
        state.fetching = null;
      }
      if (state.current === null && $("login").hidden) {
        if (state.order.length) show(state.order[0]);
        else if (!state.ops.length) showEmpty();
      }
      renderSide();
    })();
    return state.fetching;
  }

  // ------------------------------------------------------------------------------------------ drawing
  function render() {
    const e = entry();
    if (!e) return;
    const pic = state.pics.peek(e.view.image_id);
    if (!pic || !pic.ready) return;
    const { ctx, dpr, s, ox, oy, X, Y } = drawCrop(view, pic.img, { x: 0, y: 0, w: e.view.width, h: e.view.height });
    state.layout = { s: s / dpr, ox: ox / dpr, oy: oy / dpr };
    ctx.font = `${12 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    for (const b of live(e)) {
      const selected = b.key === state.selected;
      const saved = b.id !== null && b.pending === 0 && !b.dirty;
      const [x0, y0, x1, y1] = b.box;
      const path = new Path2D();
      path.rect(X(x0), Y(y0), (x1 - x0) * s, (y1 - y0) * s);
      if (selected) { ctx.fillStyle = "rgba(255,255,255,0.12)"; ctx.fill(path); }
      strokeTwice(ctx, path, (selected ? 4.5 : 3.5) * dpr, { color: color(b.category_id), width: (selected ? 2.5 : 1.6) * dpr },
        saved ? [] : [6 * dpr, 4 * dpr]);
      const label = `${categoryName(b.category_id)}${saved ? "" : " …"}`;
      const w = ctx.measureText(label).width + 8 * dpr;
      ctx.fillStyle = "rgba(0,0,0,0.7)";
      ctx.fillRect(X(x0), Y(y0) - 16 * dpr, w, 16 * dpr);
      ctx.fillStyle = color(b.category_id);
      ctx.fillText(label, X(x0) + 4 * dpr, Y(y0) - 2 * dpr);
      if (selected) {
        for (const [cx, cy] of [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) {
          ctx.fillStyle = "#ffffff";
          ctx.fillRect(X(cx) - 4 * dpr, Y(cy) - 4 * dpr, 8 * dpr, 8 * dpr);
          ctx.strokeStyle = "#000000";
          ctx.lineWidth = 1 * dpr;
          ctx.strokeRect(X(cx) - 4 * dpr, Y(cy) - 4 * dpr, 8 * dpr, 8 * dpr);
        }
      }
    }
    const d = state.drag;
    if (d && d.mode === "draw") {
      const [x0, y0, x1, y1] = ordered(d.start[0], d.start[1], d.now[0], d.now[1]);
      const path = new Path2D();
      path.rect(X(x0), Y(y0), (x1 - x0) * s, (y1 - y0) * s);
      strokeTwice(ctx, path, 3.5 * dpr, { color: color(state.category), width: 1.6 * dpr }, [6 * dpr, 4 * dpr]);
    }
  }

  function renderSide() {
    const list = $("categories");
    list.replaceChildren(...state.categories.map((c, i) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = c.id === state.category ? "category current" : "category";
      button.style.setProperty("--swatch", color(c.id));
      const key = document.createElement("kbd");
      key.textContent = i < 9 ? String(i + 1) : "–";
      button.append(key, ` ${c.name}`);
      button.addEventListener("click", () => { button.blur(); pickCategory(i); });
      li.append(button);
      return li;
    }));
    const e = entry();
    if (!e) return;
    const v = e.view;
    $("meta-image").textContent = `${v.image_id} · ${v.name} (${v.width}×${v.height})`;
    const n = live(e).length;
    $("meta-boxes").textContent = n ? String(n) : "none yet";
    const b = state.selected !== null ? byKey(e, state.selected) : null;
    $("meta-selected").textContent = b
      ? `${categoryName(b.category_id)} [${b.box.map((x) => x.toFixed(1)).join(", ")}]` : "–";
    $("btn-delete").disabled = !b;
  }

  function renderSaveState() {
    const n = state.ops.length + (state.nudgeTimer ? 1 : 0);
    const el = $("save-state");
    el.className = `save-state ${state.retrying ? "retrying" : n ? "saving" : "saved"}`;
    el.textContent = state.retrying ? "the server does not answer: trying again (nothing is lost while this page is open)"
      : n ? `saving ${n} change${n > 1 ? "s" : ""}…` : "every change saved";
    $("session").textContent = state.mine ? `${state.mine} changes from you in this session` : "";
    if (state.current === null && !n && !state.fetching) showEmpty();
    renderSide();
  }

  // ------------------------------------------------------------------------------------------ screens
  function screen(which) {
    $("work").hidden = which !== "work";
    $("empty").hidden = which !== "empty";
    $("login").hidden = which !== "login";
  }

  function setOverlay(message) {
    $("overlay").hidden = !message;
    $("overlay").textContent = message || "";
  }

  function setButtons(on) {
    for (const id of ["btn-undo", "btn-done"]) $(id).disabled = !on;
  }

  function showEmpty() {
    screen("empty");
    const p = state.progress;
    const finished = state.finished || (p && p.finish);
    if (p && !p.drawn_here) {
      $("empty-title").textContent = "Nothing to draw here";
      $("empty-text").textContent = "This project's boxes came with its dataset (apis init --images starts one whose "
        + "boxes people draw).";
      $("to-questions").hidden = false;
    } else if (finished || (p && p.frozen)) {
      $("empty-title").textContent = "Every image is boxed";
      $("empty-text").textContent = finished
        ? `The boxes are the pool: ${plural(finished.boxes, "box", "boxes")} on ${plural(finished.images, "image", "images")}. `
          + "The point questions (P0) are open."
        : "The boxes are the pool; the point questions follow.";
      $("to-questions").hidden = false;
    } else if (state.finishError) {
      $("empty-title").textContent = "Every image is done, but the boxes are not the pool yet";
      $("empty-text").textContent = state.finishError;
    }
  }

  // ------------------------------------------------------------------------------------------ progress
  // At most one progress request per 300 ms; a call inside that window is made at its end.
  const refreshProgress = throttled(async () => {
    try {
      const response = await api("/api/boxes/progress");
      if (response.ok) setProgress(await response.json());
    } catch (_) { /* shown by the next request that fails */ }
  }, 300);

  function setProgress(p) {
    state.progress = p;
    $("bar-fill").style.width = p.images ? `${(100 * p.done / p.images).toFixed(1)}%` : "0%";
    const parts = [`<b>${p.done}</b> of <b>${p.images}</b> images done`, `<b>${p.boxes}</b> boxes`];
    parts.push(`<b>${duration(p.boxes * p.box_s)}</b> of box time at ${p.box_s} s a box`);
    if (p.empty_done) parts.push(`${p.empty_done} done with no object`);
    if (p.finished) parts.push("the boxes are the pool");
    $("stats").innerHTML = parts.join(" · ");
    if (state.current === null && !state.ops.length) showEmpty();
  }

  // ------------------------------------------------------------------------------------------ input
  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  document.addEventListener("keydown", (event) => {
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "Z")) {
      event.preventDefault();
      if (!event.repeat) undo();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (ARROWS[key]) {
      event.preventDefault();
      const step = event.shiftKey ? 10 : 1;
      nudge(ARROWS[key][0] * step, ARROWS[key][1] * step);
      return;
    }
    let act = null;
    if (key === "z" || key === "Z") act = undo;
    else if (key === "Enter" || key === "n" || key === "N") act = done;
    else if (key === "Delete" || key === "Backspace") act = deleteSelected;
    else if (/^[1-9]$/.test(key)) act = () => pickCategory(Number(key) - 1);
    else if (key === "Escape") act = () => { state.selected = null; renderSide(); render(); };
    else if (key === "Tab") act = () => cycle(event.shiftKey ? -1 : 1);
    if (!act) return;
    event.preventDefault();
    if (!event.repeat) act();
  });

  function cycle(step) {
    const e = entry();
    if (!e) return;
    const boxes = live(e);
    if (!boxes.length) return;
    const at = boxes.findIndex((b) => b.key === state.selected);
    state.selected = boxes[(at + step + boxes.length) % boxes.length].key;
    renderSide();
    render();
  }

  $("btn-done").addEventListener("click", (event) => { event.currentTarget.blur(); done(); });
  $("btn-delete").addEventListener("click", (event) => { event.currentTarget.blur(); deleteSelected(); });
  for (const id of ["btn-undo", "btn-undo-empty"]) {
    $(id).addEventListener("click", (event) => { event.currentTarget.blur(); undo(); });
  }
  new ResizeObserver(() => render()).observe($("stage"));   // the window, or the layout around the stage
  window.addEventListener("pagehide", () => {
    const ids = state.order.slice(0, 50);
    if (ids.length) {
      navigator.sendBeacon("/api/boxes/release", new Blob([JSON.stringify({ image_ids: ids })], { type: "application/json" }));
    }
  });
  window.addEventListener("beforeunload", (event) => {
    if (!state.saved()) event.preventDefault();   // changes not confirmed yet would be lost with the page
  });

  // ------------------------------------------------------------------------------------------ start
  async function start() {
    try {
      const response = await api("/api/me");
      state.me = await response.json();
      $("who").textContent = `boxing as ${state.me.annotator}`;
    } catch (_) {
      screen("login");
      return;
    }
    setInterval(() => { if (!document.hidden) { refill(); refreshProgress(); } }, RENEW_MS);
    setInterval(() => { if (!document.hidden && state.current === null) refill(); }, 4000);
    refill();
  }

  start();
})();
