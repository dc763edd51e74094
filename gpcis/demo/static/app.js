// gpcis demo page: plain JavaScript, no dependencies. Talks to the JSON API of gpcis/demo/app.py.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), base = $("base"), dots = $("dots");
  const layers = { mask: $("layer-mask"), prob: $("layer-prob"), std: $("layer-std") };
  let session = null;   // session id from the server
  let imageId = null;   // the shown image's id: clicks carry it, the server refuses stale ones
  let opening = false;  // an image is being opened: clicks wait for it
  let current = null;   // last state
  let queue = Promise.resolve();  // requests run one after another, in click order
  let pending = 0;
  const TIMEOUT_MS = 180000;  // a request that takes longer is abandoned (the page stays usable)

  function showMessage(text, kind) {
    const m = $("message");
    if (!text) { m.className = "hidden"; m.textContent = ""; return; }
    m.textContent = text;
    m.className = kind || "error";
  }

  function setBusy(delta) {
    pending += delta;
    $("busy").classList.toggle("hidden", pending === 0);
  }

  // Run fn (signal -> a fetch Response promise) in order; JSON errors become messages.
  function request(fn) {
    setBusy(1);
    const p = queue.then(async () => {
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
      let resp, data = null;
      try {
        resp = await fn(ctrl.signal);
        try { data = await resp.json(); } catch (e) { data = null; }
      } catch (e) {
        showMessage(ctrl.signal.aborted ? "the gpcis server did not answer in " + TIMEOUT_MS / 1000 + " s"
                                        : "cannot reach the gpcis server: " + e);
        return null;
      } finally {
        clearTimeout(timer);
      }
      if (!resp.ok) {
        showMessage((data && data.error) || ("request failed: HTTP " + resp.status));
        if (resp.status === 409) outOfDate();
        return null;
      }
      if (data === null) { showMessage("the gpcis server sent a response that is not JSON"); return null; }
      return data;
    }).finally(() => setBusy(-1));
    queue = p.catch(() => null);
    return p;
  }

  // bodyFn runs when the request is sent (after the ones before it), not when it is queued
  function postJSON(url, bodyFn) {
    return request((signal) => fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(bodyFn()), signal,
    }));
  }

  // The server's session no longer holds the image shown (another one replaced it, e.g. after
  // an open that timed out here but finished there): the next open starts a new session.
  function outOfDate() {
    session = null;
    imageId = null;
    stage.dataset.session = "";
  }

  function fmtMs(v) { return v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms"; }

  function setLayer(img, url) {
    if (url) { img.src = url; } else { img.removeAttribute("src"); }
  }

  function render(st) {
    current = st;
    setLayer(layers.mask, st.layers.mask);
    setLayer(layers.prob, st.layers.prob);
    setLayer(layers.std, st.layers.std);
    updateToggles();
    $("click-count").textContent = st.num_clicks;
    $("object-count").textContent = st.num_objects;
    $("object-index").textContent = st.num_objects + 1;
    $("object-swatch").style.background = st.object_color;
    $("area").textContent = st.area;
    let t = fmtMs(st.time_ms);
    if (st.mean_time_ms !== null && st.num_clicks > 1) t += " (mean " + fmtMs(st.mean_time_ms) + ")";
    $("click-time").textContent = t;
    stage.dataset.area = st.area;
    stage.dataset.clicks = st.num_clicks;
    drawDots();
  }

  function updateToggles() {
    const st = current;
    $("show-std-label").classList.toggle("disabled", !(st && st.has_std));
    $("show-std").disabled = !!st && !st.has_std;
    layers.prob.classList.toggle("hidden", !$("show-prob").checked || !st || !st.layers.prob);
    layers.std.classList.toggle("hidden", !$("show-std").checked || !st || !st.layers.std);
  }

  function drawDots() {
    const ctx = dots.getContext("2d");
    ctx.clearRect(0, 0, dots.width, dots.height);
    if (!current) return;
    const r = Math.max(4, Math.round(0.009 * Math.max(dots.width, dots.height)));
    for (const c of current.clicks) {
      ctx.beginPath();
      ctx.arc(c.col + 0.5, c.row + 0.5, r, 0, 2 * Math.PI);
      ctx.fillStyle = c.positive ? "#16c22a" : "#e5231b";
      ctx.fill();
      ctx.lineWidth = Math.max(1.5, r / 3);
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    const s = current.suggestion;
    if ($("show-suggest").checked && s) {
      ctx.beginPath();
      ctx.arc(s.col + 0.5, s.row + 0.5, 2 * r, 0, 2 * Math.PI);
      ctx.lineWidth = Math.max(2, r / 2);
      ctx.setLineDash([r, r / 2]);
      ctx.strokeStyle = s.positive === true ? "#16c22a" : (s.positive === false ? "#e5231b" : "#ffd400");
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  function opened(st) {
    if (!st) { opening = false; return; }  // the open failed: the previous image stays usable
    session = st.session;
    stage.dataset.session = session;
    stage.classList.remove("empty");
    base.onload = () => {
      dots.width = st.width; dots.height = st.height;
      imageId = st.image_id;
      opening = false;
      render(st);
      let note = "opened " + st.name + " (" + st.original_width + "×" + st.original_height + ")";
      if (st.original_width !== st.width) note += ", segmented at " + st.width + "×" + st.height + "; masks are saved at full size";
      showMessage(note + ". Left click on the object.", "info");
    };
    base.onerror = () => { opening = false; showMessage("the browser could not show the image"); };
    base.src = st.image;
  }

  function openImage(form) {
    opening = true;  // from now on clicks on the image shown wait: they were meant for it
    return request((signal) => {
      if (session) form.append("session", session);
      return fetch("/api/image", { method: "POST", body: form, signal });
    }).then(opened);
  }

  function openSample() {
    const form = new FormData();
    form.append("sample", $("sample").value);
    openImage(form);
  }

  function openUpload() {
    const f = $("upload").files[0];
    if (!f) return;
    const form = new FormData();
    form.append("file", f, f.name);
    $("upload").value = "";
    openImage(form);
  }

  function pixelOf(ev) {
    const rect = dots.getBoundingClientRect();
    const col = Math.floor((ev.clientX - rect.left) * dots.width / rect.width);
    const row = Math.floor((ev.clientY - rect.top) * dots.height / rect.height);
    return {
      row: Math.min(Math.max(row, 0), dots.height - 1),
      col: Math.min(Math.max(col, 0), dots.width - 1),
    };
  }

  function addClick(ev, positive) {
    ev.preventDefault();
    if (!session) return;
    if (opening) { showMessage("the next image is opening: click once it is shown", "info"); return; }
    const p = pixelOf(ev);
    const image = imageId;  // the image this click was made on (refused by the server if replaced)
    if ($("negative-mode").checked) positive = false;
    postJSON("/api/click", () => ({ session: session, image_id: image, row: p.row, col: p.col, positive: positive }))
      .then((st) => { if (st) { showMessage(""); render(st); } });
  }

  function act(name) {
    if (!session) { showMessage("open an image first"); return; }
    if (opening) { showMessage("the next image is opening", "info"); return; }
    const image = imageId;
    postJSON("/api/" + name, () => ({ session: session, image_id: image }))
      .then((st) => { if (st) { showMessage(""); render(st); } });
  }

  async function save(kind) {
    if (!session) { showMessage("open an image first"); return; }
    if (opening) { showMessage("the next image is opening: save once it is shown", "info"); return; }
    const image = imageId;  // the masks of the image shown, or a 409
    await queue;  // after the clicks already sent
    if (!session) { showMessage("open the image again"); return; }
    let resp;
    try {
      resp = await fetch("/api/save?kind=" + kind + "&session=" + encodeURIComponent(session) +
                         "&image_id=" + encodeURIComponent(image || ""));
    } catch (e) { showMessage("cannot reach the gpcis server: " + e); return; }
    if (!resp.ok) {
      let data = null;
      try { data = await resp.json(); } catch (e) { data = null; }
      showMessage((data && data.error) || ("save failed: HTTP " + resp.status));
      if (resp.status === 409) outOfDate();
      return;
    }
    let blob;
    try { blob = await resp.blob(); } catch (e) { showMessage("the download failed: " + e); return; }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = kind === "labels" ? "masks.png" : "mask.png";
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    showMessage("saved " + a.download, "info");
  }

  dots.addEventListener("click", (ev) => addClick(ev, true));
  dots.addEventListener("contextmenu", (ev) => addClick(ev, false));
  $("open-sample").addEventListener("click", openSample);
  $("upload").addEventListener("change", openUpload);
  $("undo").addEventListener("click", () => act("undo"));
  $("reset").addEventListener("click", () => act("reset"));
  $("reset-all").addEventListener("click", () => act("reset_all"));
  $("finish").addEventListener("click", () => act("finish"));
  $("save-labels").addEventListener("click", () => save("labels"));
  $("save-current").addEventListener("click", () => save("current"));
  for (const id of ["show-prob", "show-std"]) $(id).addEventListener("change", updateToggles);
  $("show-suggest").addEventListener("change", drawDots);
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    // typing into a text field or a list is not a shortcut; a ticked checkbox keeps the focus
    // and must not swallow them
    const typing = t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable ||
      (t.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "reset", "file"].includes(t.type));
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key.toLowerCase();  // Shift / Caps Lock too
    if (key === "z") act("undo");
    else if (key === "r") act("reset");
    else if (key === "f") act("finish");
  });

  fetch("/api/info").then((r) => r.json()).then((info) => {
    if (info.error) showMessage(info.error);
  }).catch((e) => showMessage("cannot reach the gpcis server: " + e));
})();
