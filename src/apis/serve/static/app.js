// The apis labelling page: one yes/no question at a time about one pixel of one object.
//
// Frames: a question's box is xyxy and its point (x, y) an integer pixel (column, row), both in original-image
// pixels; pixel (i, j) covers [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5). The page draws a crop
// of the image around the box, scaled up, and marks that centre.
//
// Speed: questions are leased ahead and their images decoded before they are needed, so answering switches to
// the next question without waiting for the network; the answer is sent in the background and confirmed (or
// reported) when the server replies (common.js, workLoop).
"use strict";

(() => {
  const { cssVar, detail, drawCrop, duration, renderContext, strokeTwice, toast, workLoop } = window.apisCommon;
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const context = $("context");
  const accent = () => cssVar("--accent", "#ff3df2");

  const { state, start } = workLoop({
    global: "__apis",
    routes: {
      next: "/api/next", send: "/api/answer", undo: "/api/undo", progress: "/api/progress", release: "/api/release",
    },
    fields: { id: "query_id", ids: "query_ids", list: "questions", kind: "answer" },
    kinds: ["yes", "no", "skip"],
    keys: {
      y: "yes", Y: "yes", ArrowRight: "yes",
      n: "no", N: "no", ArrowLeft: "no",
      s: "skip", S: "skip",
    },
    text: {
      noun: "answer",
      loadingNext: "Loading the next question…",
      fetchFailed: "Could not fetch questions",
      taken: (id) => `Question #${id} was answered by someone else`,
      unconfirmed: (id) => `The server did not confirm your answer to #${id}; please answer it again`,
    },
    describe, render, bump, renderProgress,
    // A resent answer that was stored after all comes back as 409 "already answered".
    async notStored(response, q) {
      if (response.status === 409) {
        const body = await response.json();
        const stored = body.stored;
        toast(stored ? `Question #${q.query_id} was already answered (${stored.answer}) by ${stored.annotator}`
          : body.detail);
      } else {
        toast(`Answer to #${q.query_id} not stored: ${await detail(response)}`);
      }
    },
    undone({ question, removed }, reopen) {
      if (state.progress) {
        state.progress.done = Math.max(0, state.progress.done - 1);
        state.progress.open += 1;
        renderProgress();
      }
      reopen(question, [removed]);
      toast(`Undone: question #${question.query_id} is open again`, 2000);
    },
    welcome(me) {
      $("who").textContent = `answering as ${me.annotator}`;
      if (me.review_step !== null && me.review_step !== undefined) {
        $("to-review").textContent = `Review the masks of step ${me.review_step} →`;
        $("to-review").hidden = false;
      }
    },
  });

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
    const crop = cropOf(q);
    const { ctx, dpr, s, ox, oy, X, Y } = drawCrop(view, entry.img, crop);

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
    strokeTwice(ctx, circle, 6 * dpr, { color: accent(), width: 3 * dpr });
    if (s >= 6) {                             // the pixel itself, when it is big enough to outline
      const cell = new Path2D();
      cell.rect(X(q.x), Y(q.y), s, s);
      strokeTwice(ctx, cell, 3 * dpr, { color: "#ffffff", width: 1.2 * dpr });
    }
    renderContext(context, entry.img, q.width, q.height, crop, q.box, accent());
  }

  function describe(q) {
    $("category").textContent = q.category;
    $("meta-query").textContent = `#${q.query_id} (step ${q.step}${q.replaces ? `, after "can't tell" on #${q.replaces}` : ""})`;
    $("meta-image").textContent = `${q.image_id} (${q.width}×${q.height})`;
    $("meta-pixel").textContent = `(${q.x}, ${q.y})`;
  }

  // ------------------------------------------------------------------------------------------ progress
  function bump(kind) {
    const p = state.progress;
    if (!p) return;
    if (kind !== "skip") { p.done += 1; p.open = Math.max(0, p.open - 1); }
    renderProgress();
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

  start();
})();
