// The apis review page: one exported mask at a time, lowest trust first; accept it, reject it (the object needs
// more points) or skip it.
//
// Frames: an item's box is xyxy in original-image pixels, pixel (i, j) covering [i, i+1) x [j, j+1); its crop
// [x0, y0, x1, y1] is the integer pixel window shown (columns x0..x1-1, rows y0..y1-1); its mask covers the crop,
// as row-major run lengths starting with pixels off the object; a point (x, y) is an integer pixel, drawn at its
// centre (x + 0.5, y + 0.5). The page scales the crop up to the stage and draws the mask over it.
//
// Speed: as on the question page (common.js, workLoop), objects are leased ahead, their images decoded and masks
// prepared before they are needed; a decision is sent in the background and confirmed (or reported) when the
// server replies.
"use strict";

(() => {
  const { cssVar, detail, drawCrop, duration, renderContext, strokeTwice, toast, workLoop } = window.apisCommon;
  const MASK_ALPHA = 0.45;    // opacity of the mask's fill
  const MASK_VIEWS = ["fill and outline", "outline only", "hidden"];
  const SOURCES = {
    prediction_set: "the model's prediction set",
    detection: "an overlapping detection (no prediction set)",
    no_model: "the ellipse inscribed in the box: the model found nothing here",
    missing: "none: the model found nothing here",
    reviewed: "a mask a person accepted earlier",
  };
  const PAST = { accept: "accepted", reject: "rejected", skip: "skipped" };

  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const context = $("context");

  const { state, start } = workLoop({
    global: "__apisReview",
    routes: {
      next: "/api/review/next", send: "/api/review/decide", undo: "/api/review/undo",
      progress: "/api/review/progress", release: "/api/review/release",
    },
    fields: { id: "instance_id", ids: "instance_ids", list: "items", kind: "decision" },
    kinds: ["reject", "skip", "accept"],
    keys: {
      a: "accept", A: "accept", ArrowRight: "accept",
      r: "reject", R: "reject", ArrowLeft: "reject",
      s: "skip", S: "skip",
      m: "mask", M: "mask",
    },
    actions: { mask: cycleMask },
    state: {
      masks: new Map(),        // instance_id -> {fill: canvas, outline: Path2D, pixels}
      maskView: 0,             // index into MASK_VIEWS
    },
    text: {
      noun: "decision",
      loadingNext: "Loading the next mask…",
      fetchFailed: "Could not fetch masks to review",
      taken: (id) => `Object #${id} was decided by someone else`,
      unconfirmed: (id) => `The server did not confirm your decision about #${id}; please decide again`,
    },
    errorMs: 6000,
    describe, render, prepare, bump, renderProgress,
    allowed: (kind, it) => kind !== "accept" || Boolean(it && it.mask),
    blocked(kind, it) {
      if (kind === "accept" && !it.mask) {
        toast("There is no mask to accept: reject it (R) to ask for more points, or skip it (S)");
      }
    },
    // A resent decision that was stored after all is confirmed as it is.
    async notStored(response, it) {
      toast(`Your decision about #${it.instance_id} was not stored: ${await detail(response)}`, 6000);
    },
    undone({ undone, item }, reopen) {
      if (!item) {
        toast(`Undone: your ${undone.decision} of #${undone.instance_id} at step ${undone.step} (not reviewed here)`);
        return;
      }
      reopen(item);
      toast(`Undone: your ${undone.decision} of #${item.instance_id}`, 2000);
    },
    empty() {
      const p = state.progress;
      $("empty-text").textContent = p && p.remaining
        ? `${p.remaining} of the ${p.total} masks of step ${p.step} wait for a decision: with other reviewers, or ` +
          "skipped by you. They appear here when their lease runs out; undo brings back your last one."
        : "Every mask of this step has been decided.";
    },
    welcome(me) {
      $("who").textContent = `reviewing as ${me.annotator}`;
      if (me.review_step !== null) {
        $("title").textContent = `review · step ${me.review_step}`;
        document.title = `apis — review masks of step ${me.review_step}`;
      }
    },
  });

  // ------------------------------------------------------------------------------------------ prefetch
  // The mask, made ready ahead with the image (which workLoop loads); masks of objects no longer held are dropped.
  function prepare(item) {
    maskOf(item);
    const keep = new Set(state.queue.map((it) => it.instance_id));
    if (state.current) keep.add(state.current.instance_id);
    keep.add(item.instance_id);
    for (const id of state.masks.keys()) if (!keep.has(id)) state.masks.delete(id);
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
    const rgb = hexRgb(cssVar("--mask", "#ff3df2"));
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
    const [cx0, cy0, cx1, cy1] = it.crop;
    const crop = { x: cx0, y: cy0, w: cx1 - cx0, h: cy1 - cy0 };
    const { ctx, dpr, s, ox, oy, X, Y } = drawCrop(view, entry.img, crop);

    const mask = maskOf(it);
    if (state.maskView === 0) {
      ctx.save();
      ctx.globalAlpha = MASK_ALPHA;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(mask.fill, ox, oy, crop.w * s, crop.h * s);
      ctx.restore();
    }
    if (state.maskView < 2) {
      ctx.save();
      ctx.setTransform(s, 0, 0, s, ox, oy);   // the outline is in crop pixels: widths are divided by s
      ctx.lineCap = "square";
      strokeTwice(ctx, mask.outline, 3.5 * dpr / s, { color: cssVar("--mask-line", "#ffffff"), width: 1.6 * dpr / s });
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
      ctx.fillStyle = p.label ? cssVar("--yes-point", "#2ee07f") : cssVar("--no-point", "#ff4545");
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
    renderContext(context, entry.img, it.width, it.height, crop, it.box, cssVar("--mask", "#ff3df2"));
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

  $("btn-mask").addEventListener("click", (event) => { event.currentTarget.blur(); cycleMask(); });

  start();
})();
