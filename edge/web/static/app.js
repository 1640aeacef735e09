"use strict";
// The browser view: one WebSocket message per frame (a JSON header, the RGB | depth JPEG, and the 16-bit depth PNG
// while the cursor is on the picture or a point is pinned). Each message is acknowledged once decoded, so the server
// never has more than two on the way; the newest decoded frame is drawn at the next animation frame, older ones are
// skipped. The depth read under the cursor is always the shown frame's own.
// Off loopback the address carries the view's token: it is kept here, in memory, passed on to the stream and the
// snapshot, and taken out of the address bar (and so out of the history) at once. No cookie holds it.

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("view"), ctx = canvas.getContext("2d");
  const chart = $("chart"), chartCtx = chart.getContext("2d");
  const PIN_COLOURS = ["#ff4fd8", "#5fb3ff", "#ffd84f", "#7dff7a"];
  const HISTORY = 300;  // samples a pinned point keeps
  const state = {
    ws: null, shown: null, pending: null, hover: null, pins: [], depthWish: null,
    received: 0, drawn: 0, skipped: 0, shownAt: [], decodeMs: [], ended: false, statsShownAt: -Infinity,
  };
  const TOKEN = new URLSearchParams(location.search).get("token");
  const withToken = (path) => TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;
  if (TOKEN) history.replaceState(null, "", location.pathname);
  const STATS_EVERY_MS = 250;  // figures are read by people: four updates a second, not one per frame
  window.smoothdinoView = state;  // what tests and benchmarks read

  function setStatus(kind, text) {
    $("status").dataset.state = kind;
    $("status").textContent = text;
  }

  function connect() {
    if (state.ws) return;  // a reconnect timer and the tab coming back may both ask
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${withToken("/ws")}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { setStatus("live", "live"); state.depthWish = null; syncDepthWish(); };
    ws.onmessage = (event) => receive(event.data);
    ws.onclose = (event) => {
      state.ws = null;
      if (document.hidden) { setStatus("ended", "paused (tab hidden)"); return; }  // back when shown again
      state.ended = event.code === 1001;
      // a stream that ended may start again on the same address (the next `live` run): keep asking, slowly
      setStatus(state.ended ? "ended" : "reconnecting", state.ended ? "stream ended" : "reconnecting");
      setTimeout(connect, state.ended ? 3000 : 1000);
    };
    state.ws = ws;
  }

  function send(command) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(command));
  }

  function syncDepthWish() {
    const wanted = state.hover !== null || state.pins.length > 0;
    if (wanted !== state.depthWish && state.ws && state.ws.readyState === WebSocket.OPEN) {
      send({depth: wanted});
      state.depthWish = wanted;
    }
  }

  async function receive(buffer) {
    const arrived = performance.now();
    const headerLength = new DataView(buffer).getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
    const jpegAt = 4 + headerLength;
    let bitmap = null, depth = null;
    try {
      const jpeg = new Blob([new Uint8Array(buffer, jpegAt, header.jpeg_bytes)], {type: "image/jpeg"});
      [bitmap, depth] = await Promise.all([
        createImageBitmap(jpeg),
        header.depth_bytes ? decodePng16(new Uint8Array(buffer, jpegAt + header.jpeg_bytes, header.depth_bytes)) : null,
      ]);
    } catch (error) {
      console.warn("smoothdino: a frame could not be decoded", error);
    } finally {
      send({ack: header.seq});
    }
    state.received++;
    state.decodeMs.push(performance.now() - arrived);
    if (state.decodeMs.length > 1000) state.decodeMs.splice(0, 500);
    if (!bitmap) return;
    const newest = state.pending || state.shown;
    if (newest && newest.seq >= header.seq) { bitmap.close(); return; }  // decoded out of order: older
    if (state.pending) { state.pending.bitmap.close(); state.skipped++; }
    state.pending = {seq: header.seq, header, bitmap, depth};
    requestAnimationFrame(draw);
  }

  function draw(time) {
    const frame = state.pending;
    if (!frame) return;
    state.pending = null;
    if (state.shown) state.shown.bitmap.close();
    state.shown = frame;
    if (canvas.width !== frame.bitmap.width || canvas.height !== frame.bitmap.height) {
      canvas.width = frame.bitmap.width;
      canvas.height = frame.bitmap.height;
      fitPixels();
    }
    paint();
    state.drawn++;
    state.shownAt.push([frame.seq, frame.header.written_ms, performance.timeOrigin + performance.now()]);
    if (state.shownAt.length > 2000) state.shownAt.splice(0, 1000);
    if (state.pins.length) recordPins(frame);
    // a first frame written more than a second ago (a paused stream) is shown with its age, never as live
    if (frame.header.stale_s != null) setStatus("stale", `not live: this frame is ${frame.header.stale_s.toFixed(1)} s old`);
    else if ($("status").dataset.state === "stale") setStatus("live", "live");
    if (time - state.statsShownAt >= STATS_EVERY_MS) {
      state.statsShownAt = time;
      showStats(frame.header);
    }
    if (state.hover) showReadout();
    $("snapshot").disabled = false;
  }

  // small frames are enlarged with visible pixels (the pixel under the cursor is the one read); asked only when
  // the size changes, since it makes the browser lay the page out
  function fitPixels() {
    canvas.classList.toggle("pixelated", canvas.getBoundingClientRect().width > canvas.width);
  }
  window.addEventListener("resize", fitPixels);

  function paint() {
    const frame = state.shown;
    if (!frame) return;
    ctx.drawImage(frame.bitmap, 0, 0);
    const {width} = frame.header;
    const marks = state.pins.map((pin) => [pin, pin.colour]);
    if (state.hover) marks.push([state.hover, "#ffffff"]);
    for (const [point, colour] of marks) {
      for (const left of [0, width]) {  // the same pixel on the frame and on its depth
        ctx.strokeStyle = colour;
        ctx.lineWidth = Math.max(1, width / 320);
        const r = Math.max(3, width / 80);
        ctx.beginPath();
        ctx.arc(left + point.x + 0.5, point.y + 0.5, r, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }

  function pixelAt(event) {
    const frame = state.shown;
    if (!frame) return null;
    const box = canvas.getBoundingClientRect();
    const cx = Math.floor((event.clientX - box.left) * canvas.width / box.width);
    const cy = Math.floor((event.clientY - box.top) * canvas.height / box.height);
    const {width, height} = frame.header;
    if (cx < 0 || cx >= 2 * width || cy < 0 || cy >= height) return null;  // the colour bar is no pixel
    return {x: cx >= width ? cx - width : cx, y: cy};
  }

  // depth (m) at a pixel of the shown frame and its 3-D point in the camera's optical frame (x right, y down,
  // z forward): X = (u - cx) z / fx, Y = (v - cy) z / fy, as the point clouds are made; null: no depth there
  function measure(frame, pixel) {
    if (!frame || !frame.depth || !pixel) return null;
    const millimetres = frame.depth.data[pixel.y * frame.depth.width + pixel.x];
    const z = millimetres / 1000, k = frame.header.intrinsics;
    const x = (pixel.x - k.cx) * z / k.fx, y = (pixel.y - k.cy) * z / k.fy;
    return {millimetres, z, x, y, distance: Math.hypot(x, y, z)};
  }

  function showReadout() {
    const frame = state.shown, pixel = state.hover, box = $("readout");
    const m = measure(frame, pixel);
    box.dataset.frame = frame ? frame.header.frame : "";
    box.dataset.seq = frame ? frame.seq : "";
    box.dataset.x = pixel ? pixel.x : "";
    box.dataset.y = pixel ? pixel.y : "";
    box.dataset.depthMm = m ? m.millimetres : "";
    $("readout-pixel").textContent = pixel ? `x ${pixel.x}, y ${pixel.y}` : "-";
    $("readout-frame").textContent = frame ? frame.header.frame : "-";
    if (!pixel) {
      for (const id of ["readout-depth", "readout-point", "readout-distance"]) $(id).textContent = "-";
    } else if (!m) {
      $("readout-depth").textContent = "(asking for the depth)";
    } else if (m.millimetres === 0) {
      $("readout-depth").textContent = "no depth";
      $("readout-point").textContent = $("readout-distance").textContent = "-";
    } else {
      $("readout-depth").textContent = `${m.z.toFixed(3)} m`;
      $("readout-point").textContent = `${m.x.toFixed(3)}, ${m.y.toFixed(3)}, ${m.z.toFixed(3)} m`;
      $("readout-distance").textContent = `${m.distance.toFixed(3)} m`;
      $("readout-point").title = `intrinsics (${frame.header.intrinsics.from}): fx ${frame.header.intrinsics.fx.toFixed(1)}, fy ${frame.header.intrinsics.fy.toFixed(1)}, cx ${frame.header.intrinsics.cx.toFixed(1)}, cy ${frame.header.intrinsics.cy.toFixed(1)}`;
    }
  }

  function recordPins(frame) {
    for (const pin of state.pins) {
      const m = measure(frame, pin);
      pin.series.push(m && m.millimetres ? m.distance : null);
      if (pin.series.length > HISTORY) pin.series.shift();
      pin.last = m;
    }
    showPins();
  }

  function showPins() {
    const list = $("pin-list");
    list.replaceChildren(...state.pins.map((pin, i) => {
      const item = document.createElement("li");
      item.style.color = pin.colour;
      const m = pin.last;
      item.textContent = `(${pin.x}, ${pin.y}) ` + (m && m.millimetres ? `${m.distance.toFixed(3)} m away, depth ${m.z.toFixed(3)} m` : "no depth in this frame");
      item.title = "click to unpin";
      item.onclick = () => { state.pins.splice(i, 1); syncDepthWish(); showPins(); paint(); };
      return item;
    }));
    $("clear-pins").hidden = state.pins.length === 0;
    drawChart();
  }

  function drawChart() {
    const w = chart.width, h = chart.height;
    chartCtx.clearRect(0, 0, w, h);
    const values = state.pins.flatMap((pin) => pin.series.filter((v) => v !== null));
    if (!values.length) return;
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 0.05) { lo -= 0.025; hi += 0.025; }
    const y = (v) => h - 14 - (v - lo) / (hi - lo) * (h - 24);
    chartCtx.fillStyle = "#9a9a9a";
    chartCtx.font = "11px system-ui, sans-serif";
    chartCtx.fillText(`${hi.toFixed(2)} m`, 2, 11);
    chartCtx.fillText(`${lo.toFixed(2)} m   (last ${HISTORY} frames)`, 2, h - 2);
    for (const pin of state.pins) {
      chartCtx.strokeStyle = pin.colour;
      chartCtx.beginPath();
      let drawing = false;
      pin.series.forEach((v, i) => {
        if (v === null) { drawing = false; return; }
        const px = (i + HISTORY - pin.series.length) / (HISTORY - 1) * w;
        if (drawing) chartCtx.lineTo(px, y(v)); else chartCtx.moveTo(px, y(v));
        drawing = true;
      });
      chartCtx.stroke();
    }
  }

  function ms(value) { return value >= 10 ? value.toFixed(0) : value.toFixed(1); }

  function showStats(h) {
    $("source").textContent = `${h.source} - ${h.width}x${h.height}`;
    $("banner").hidden = !h.random_weights;
    const rows = [
      ["frame", `${h.frame} (#${h.index})`],
      ["output", `${h.fps.toFixed(1)} FPS`],
      ["network", `${h.network_fps.toFixed(2)} passes/s`],
    ];
    if (h.resumed) rows.push(["depth", "read back from an earlier run"]);
    else {
      rows.push(["depth age", h.keyframe ? "keyframe (this frame)" : `${h.age_frames} frames, ${ms(h.age_ms)} ms`]);
      rows.push(["carried by", (h.carry || (h.keyframe ? "network" : "shift"))
        + (h.carry === "pose" && h.inliers != null ? ` (${h.inliers} inliers)` : "")
        + (h.fallback ? ` (fell back: ${h.fallback})` : "")]);
      rows.push(["fusion", h.fused ? "on: fused with the earlier output" : "off: the network's own depth"]);
      const stages = Object.entries(h.stages_ms || {}).filter(([name]) => name !== "total");
      rows.push(["stages", stages.map(([name, v]) => `${name} ${ms(v)}`).join(" / ") + " ms"]);
      if (h.stages_ms && h.stages_ms.total) rows.push(["step", `${ms(h.stages_ms.total)} ms`]);
      if (h.flicker != null) rows.push(["flicker", `${(100 * h.flicker).toFixed(1)} % median`
        + (h.flicker_p90 != null ? `, ${(100 * h.flicker_p90).toFixed(1)} % p90` : "")
        + " (change against the last output, carried by the camera's motion)"]);
    }
    rows.push(["dropped", `camera ${h.camera_dropped}, for viewers ${h.viewer_dropped}, this page ${state.skipped}`]);
    if (h.skipped) rows.push(["skipped", `${h.skipped} unreadable frames`]);
    rows.push(["colours", `${h.depth_range[0]} to ${h.depth_range[1]} m`]);
    $("stats").replaceChildren(...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      dd.dataset.stat = name;
      return [dt, dd];
    }));
  }

  canvas.addEventListener("mousemove", (event) => {
    state.hover = pixelAt(event);
    syncDepthWish();
    paint();
    showReadout();
  });
  canvas.addEventListener("mouseleave", () => {
    state.hover = null;
    syncDepthWish();
    paint();
    showReadout();
  });
  canvas.addEventListener("click", (event) => {
    const pixel = pixelAt(event);
    if (!pixel) return;
    if (state.pins.length === PIN_COLOURS.length) state.pins.shift();
    const used = new Set(state.pins.map((pin) => pin.colour));
    state.pins.push({...pixel, colour: PIN_COLOURS.find((c) => !used.has(c)), series: [], last: null});
    syncDepthWish();
    showPins();
    paint();
  });
  $("clear-pins").addEventListener("click", () => { state.pins = []; syncDepthWish(); showPins(); paint(); });
  $("snapshot").addEventListener("click", async () => {
    if (!state.shown) return;
    const result = $("snapshot-result");
    result.textContent = "saving";
    try {
      const response = await fetch(withToken(`/snapshot?seq=${state.shown.seq}`), {method: "POST"});
      const body = await response.json();
      const stem = response.ok ? body.saved[0].split("/").pop().replace(/_rgb\.png$/, "") : "";
      result.textContent = response.ok ? `saved ${stem}_{rgb,depth_mm,depth_color}.png`
        : `not saved: ${body.error || response.status}`;
      result.title = response.ok ? body.saved.join("\n") : "";
      result.dataset.saved = response.ok ? body.saved.join("\n") : "";
    } catch (error) {
      result.textContent = `not saved: ${error}`;
    }
  });

  // a hidden tab draws nothing: it gives its frames back (closes the stream) and asks again when shown
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && state.ws) state.ws.close(1000);
    else if (!document.hidden && !state.ws) connect();
  });

  connect();
})();
