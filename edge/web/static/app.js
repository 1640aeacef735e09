"use strict";
// The browser view: one WebSocket message per frame (a JSON header, the RGB | depth JPEG, and the 16-bit depth PNG
// while the cursor is on the picture or a point is pinned). Each message is acknowledged once decoded, so the server
// never has more than a few on the way; the newest decoded frame is drawn at the next animation frame, older ones are
// skipped. The depth read under the cursor is always the shown frame's own.
// Several cameras (the header's `camera` is a name, not null): one tile per camera, each with its own picture, its
// figures and its own newest frame; the cursor, pins and the depth read work in every tile, the panel on the right
// shows the tile last pointed at, and Snapshot saves every tile's frame. The depth PNG is asked for the tiles that
// have the cursor or a pinned point only ({"depth": ["front", ...]}).
// Off loopback the address carries the view's token: it is kept here, in memory, passed on to the stream and the
// snapshot, and taken out of the address bar (and so out of the history) at once. No cookie holds it.

(() => {
  const $ = (id) => document.getElementById(id);
  const chart = $("chart"), chartCtx = chart.getContext("2d");
  const PIN_COLOURS = ["#ff4fd8", "#5fb3ff", "#ffd84f", "#7dff7a"];
  const HISTORY = 300;  // samples a pinned point keeps
  const STALE_AFTER_MS = 2000;  // a tile whose camera sent nothing for this long while the others did: marked
  const state = {
    ws: null, tiles: new Map(), multi: null, selected: null, hover: null, pins: [], depthWish: null,
    received: 0, drawn: 0, skipped: 0, shownAt: [], decodeMs: [], ended: false, statsShownAt: -Infinity,
  };
  // the single camera's (or the first tile's) frame, as before there were tiles: what tests and benchmarks read
  Object.defineProperty(state, "shown", {get: () => { const t = firstTile(); return t ? t.shown : null; }});
  Object.defineProperty(state, "pending", {get: () => { const t = firstTile(); return t ? t.pending : null; }});
  const TOKEN = new URLSearchParams(location.search).get("token");
  const withToken = (path) => TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;
  if (TOKEN) history.replaceState(null, "", location.pathname);
  const STATS_EVERY_MS = 250;  // figures are read by people: four updates a second, not one per frame
  window.smoothdinoView = state;  // what tests and benchmarks read

  function setStatus(kind, text) {
    $("status").dataset.state = kind;
    $("status").textContent = text;
  }

  // -- tiles: one per camera (the single camera's is the page's own #view canvas) ----------------------------------

  function firstTile() {
    for (const tile of state.tiles.values()) return tile;
    return null;
  }

  function orderedTiles() {
    return [...state.tiles.values()];
  }

  function setMode(multi) {
    if (state.multi === multi) return;
    for (const tile of state.tiles.values()) {
      if (tile.shown) tile.shown.bitmap.close();
      if (tile.pending) tile.pending.bitmap.close();
    }
    state.tiles.clear();
    state.pins = [];
    state.hover = null;
    state.selected = null;
    const old = $("tiles");
    if (old) old.remove();
    $("view").hidden = multi;
    $("readout-camera-name").hidden = $("readout-camera").hidden = !multi;
    if (multi) {
      const grid = document.createElement("div");
      grid.id = "tiles";
      $("view").after(grid);
    }
    state.multi = multi;
    showPins();
  }

  function makeTile(camera) {
    const tile = {camera, shown: null, pending: null, skipped: 0, lastAt: 0, statsShownAt: -Infinity, stale: false};
    if (camera === null) {
      tile.canvas = $("view");
    } else {
      const figure = document.createElement("figure"), head = document.createElement("div");
      figure.className = "tile";
      figure.dataset.camera = camera;
      head.className = "tile-head";
      const name = document.createElement("strong");
      name.className = "tile-name";
      name.textContent = camera;
      tile.status = document.createElement("span");
      tile.status.className = "tile-status";
      tile.status.dataset.state = "live";
      tile.status.textContent = "live";
      tile.figures = document.createElement("span");
      tile.figures.className = "tile-figures";
      head.append(name, tile.status, tile.figures);
      tile.canvas = document.createElement("canvas");
      tile.canvas.className = "tile-view";
      tile.canvas.width = 640;
      tile.canvas.height = 240;
      tile.canvas.setAttribute("aria-label", `camera ${camera}: RGB frame and its depth, colour bar in metres`);
      figure.append(head, tile.canvas);
      tile.figure = figure;
      listen(tile.canvas, camera);
    }
    tile.ctx = tile.canvas.getContext("2d");
    return tile;
  }

  function tileFor(camera, cameras) {
    let tile = state.tiles.get(camera);
    if (tile) return tile;
    tile = makeTile(camera);
    state.tiles.set(camera, tile);
    if (camera !== null) {  // tiles in the order the command named the cameras
      const order = cameras || [];
      const rank = (c) => { const i = order.indexOf(c); return i < 0 ? order.length : i; };
      const sorted = [...state.tiles.entries()].sort((a, b) => rank(a[0]) - rank(b[0]));
      state.tiles = new Map(sorted);
      $("tiles").replaceChildren(...sorted.map(([, t]) => t.figure));
      $("source").textContent = `${state.tiles.size} camera${state.tiles.size > 1 ? "s" : ""}: `
        + [...state.tiles.keys()].join(", ");
    }
    return tile;
  }

  // -- the stream --------------------------------------------------------------------------------------------------

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
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    if (!state.multi) {
      const wanted = state.hover !== null || state.pins.length > 0;
      if (wanted !== state.depthWish) {
        send({depth: wanted});
        state.depthWish = wanted;
      }
      return;
    }
    const asked = new Set(state.pins.map((pin) => pin.camera));
    if (state.hover) asked.add(state.hover.camera);
    const cameras = [...state.tiles.keys()].filter((c) => asked.has(c));
    const key = JSON.stringify(cameras);
    if (key !== state.depthWish) {
      send({depth: key.length > 200 ? true : cameras});  // the server reads commands of 256 bytes at most
      state.depthWish = key;
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
    const camera = header.camera == null ? null : header.camera;
    setMode(camera !== null);
    const tile = tileFor(camera, header.cameras);
    tile.lastAt = performance.now();
    const newest = tile.pending || tile.shown;
    if (newest && newest.seq >= header.seq) { bitmap.close(); return; }  // decoded out of order: older
    if (tile.pending) { tile.pending.bitmap.close(); tile.skipped++; state.skipped++; }
    tile.pending = {seq: header.seq, header, bitmap, depth};
    requestAnimationFrame((time) => draw(tile, time));
  }

  function draw(tile, time) {
    const frame = tile.pending;
    if (!frame || state.tiles.get(tile.camera) !== tile) return;
    tile.pending = null;
    if (tile.shown) tile.shown.bitmap.close();
    tile.shown = frame;
    if (tile.canvas.width !== frame.bitmap.width || tile.canvas.height !== frame.bitmap.height) {
      tile.canvas.width = frame.bitmap.width;
      tile.canvas.height = frame.bitmap.height;
      fitPixels(tile);
    }
    paint(tile);
    state.drawn++;
    state.shownAt.push([frame.seq, frame.header.written_ms, performance.timeOrigin + performance.now()]);
    if (state.shownAt.length > 2000) state.shownAt.splice(0, 1000);
    if (state.pins.length) recordPins(tile, frame);
    if (tile.camera === null) {
      // a first frame written more than a second ago (a paused stream) is shown with its age, never as live
      if (frame.header.stale_s != null) setStatus("stale", `not live: this frame is ${frame.header.stale_s.toFixed(1)} s old`);
      else if ($("status").dataset.state === "stale") setStatus("live", "live");
      if (time - state.statsShownAt >= STATS_EVERY_MS) {
        state.statsShownAt = time;
        showStats(frame.header, tile);
      }
    } else {
      // per camera: its first frame, when old, says its age; a camera that stops sending is marked by the timer
      tile.stale = frame.header.stale_s != null;
      setTileStatus(tile, tile.stale ? "stale" : "live",
                    tile.stale ? `not live: ${frame.header.stale_s.toFixed(1)} s old` : "live");
      if (time - tile.statsShownAt >= STATS_EVERY_MS) {
        tile.statsShownAt = time;
        showTileFigures(tile, frame.header);
        if (selectedTile() === tile) showStats(frame.header, tile);
      }
    }
    const hovered = state.hover && state.hover.camera === tile.camera;
    if (hovered || (!state.multi && state.hover)) showReadout();
    $("snapshot").disabled = false;
  }

  function setTileStatus(tile, kind, text) {
    if (tile.status.dataset.state === kind && tile.status.textContent === text) return;
    tile.status.dataset.state = kind;
    tile.status.textContent = text;
  }

  function selectedTile() {
    return (state.selected !== null && state.tiles.get(state.selected)) || firstTile();
  }

  // several cameras: a tile whose camera has sent nothing for a while (unplugged, stalled) says so, the others go on
  setInterval(() => {
    if (!state.multi || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    for (const tile of state.tiles.values()) {
      if (tile.lastAt && now - tile.lastAt > STALE_AFTER_MS) {
        tile.stale = true;
        setTileStatus(tile, "stale", `not live: no new frame for ${((now - tile.lastAt) / 1000).toFixed(0)} s`);
      }
    }
  }, 500);

  // small frames are enlarged with visible pixels (the pixel under the cursor is the one read); asked only when
  // the size changes, since it makes the browser lay the page out
  function fitPixels(tile) {
    tile.canvas.classList.toggle("pixelated", tile.canvas.getBoundingClientRect().width > tile.canvas.width);
  }
  window.addEventListener("resize", () => { for (const tile of state.tiles.values()) fitPixels(tile); });

  function paint(tile) {
    const frame = tile && tile.shown;
    if (!frame) return;
    const ctx = tile.ctx;
    ctx.drawImage(frame.bitmap, 0, 0);
    const {width} = frame.header;
    const marks = state.pins.filter((pin) => pin.camera === tile.camera).map((pin) => [pin, pin.colour]);
    if (state.hover && state.hover.camera === tile.camera) marks.push([state.hover, "#ffffff"]);
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

  function pixelAt(tile, event) {
    const frame = tile && tile.shown;
    if (!frame) return null;
    const canvas = tile.canvas, box = canvas.getBoundingClientRect();
    const cx = Math.floor((event.clientX - box.left) * canvas.width / box.width);
    const cy = Math.floor((event.clientY - box.top) * canvas.height / box.height);
    const {width, height} = frame.header;
    if (cx < 0 || cx >= 2 * width || cy < 0 || cy >= height) return null;  // the colour bar is no pixel
    return {x: cx >= width ? cx - width : cx, y: cy, camera: tile.camera};
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
    const pixel = state.hover;
    const tile = pixel ? state.tiles.get(pixel.camera) : (state.multi ? null : state.tiles.get(null));
    const frame = tile ? tile.shown : null, box = $("readout");
    const m = measure(frame, pixel);
    box.dataset.camera = tile && tile.camera !== null ? tile.camera : "";
    box.dataset.frame = frame ? frame.header.frame : "";
    box.dataset.seq = frame ? frame.seq : "";
    box.dataset.x = pixel ? pixel.x : "";
    box.dataset.y = pixel ? pixel.y : "";
    box.dataset.depthMm = m ? m.millimetres : "";
    $("readout-camera").textContent = tile && tile.camera !== null ? tile.camera : "-";
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

  function recordPins(tile, frame) {
    let changed = false;
    for (const pin of state.pins) {
      if (pin.camera !== tile.camera) continue;
      const m = measure(frame, pin);
      pin.series.push(m && m.millimetres ? m.distance : null);
      if (pin.series.length > HISTORY) pin.series.shift();
      pin.last = m;
      changed = true;
    }
    if (changed) showPins();
  }

  function unpin(i) {
    const [pin] = state.pins.splice(i, 1);
    syncDepthWish();
    showPins();
    if (pin) paint(state.tiles.get(pin.camera));
  }

  function showPins() {
    const list = $("pin-list");
    list.replaceChildren(...state.pins.map((pin, i) => {
      const item = document.createElement("li");
      item.style.color = pin.colour;
      const m = pin.last;
      item.textContent = (pin.camera !== null ? `${pin.camera} ` : "") + `(${pin.x}, ${pin.y}) `
        + (m && m.millimetres ? `${m.distance.toFixed(3)} m away, depth ${m.z.toFixed(3)} m` : "no depth in this frame");
      item.title = "click to unpin";
      item.onclick = () => unpin(i);
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

  function ageText(h) {
    return h.keyframe ? "keyframe (this frame)" : `${h.age_frames} frames, ${ms(h.age_ms)} ms`;
  }

  // a tile's own line of figures: its rate, the depth's age, fusion and flicker
  function showTileFigures(tile, h) {
    const parts = [["fps", `${h.fps.toFixed(1)} FPS`], ["network", `${h.network_fps.toFixed(2)} passes/s`]];
    if (h.resumed) parts.push(["age", "read back"]);
    else {
      parts.push(["age", `age: ${h.keyframe ? "keyframe" : `${h.age_frames} fr, ${ms(h.age_ms)} ms`}`]);
      parts.push(["fusion", h.fused ? "fused" : "not fused"]);
      if (h.flicker != null) parts.push(["flicker", `flicker ${(100 * h.flicker).toFixed(1)} %`]);
    }
    tile.figures.replaceChildren(...parts.map(([name, text]) => {
      const span = document.createElement("span");
      span.dataset.tileStat = name;
      span.textContent = text;
      return span;
    }));
  }

  function showStats(h, tile) {
    if (!state.multi) $("source").textContent = `${h.source} - ${h.width}x${h.height}`;
    $("banner").hidden = !h.random_weights;
    for (const t of state.tiles.values()) if (t.figure) t.figure.classList.toggle("selected", t === tile);
    const rows = [];
    if (state.multi) rows.push(["camera", `${h.camera} (${h.source}, ${h.width}x${h.height})`]);
    rows.push(
      ["frame", `${h.frame} (#${h.index})`],
      ["output", `${h.fps.toFixed(1)} FPS`],
      ["network", `${h.network_fps.toFixed(2)} passes/s`],
    );
    if (h.resumed) rows.push(["depth", "read back from an earlier run"]);
    else {
      rows.push(["depth age", ageText(h)]);
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
    rows.push(["dropped", `camera ${h.camera_dropped}, for viewers ${h.viewer_dropped}, this page ${tile.skipped}`]);
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

  // -- the cursor, pins and the snapshot ---------------------------------------------------------------------------

  function listen(canvas, camera) {
    const tile = () => state.tiles.get(camera);
    canvas.addEventListener("mousemove", (event) => {
      const previous = state.hover;
      state.hover = pixelAt(tile(), event);
      if (state.multi && state.selected !== camera && tile()) {  // the panel follows the tile pointed at
        state.selected = camera;
        if (tile().shown) showStats(tile().shown.header, tile());
      }
      syncDepthWish();
      if (previous && previous.camera !== camera) paint(state.tiles.get(previous.camera));
      paint(tile());
      showReadout();
    });
    canvas.addEventListener("mouseleave", () => {
      if (state.hover && state.hover.camera !== camera) return;
      state.hover = null;
      syncDepthWish();
      paint(tile());
      showReadout();
    });
    canvas.addEventListener("click", (event) => {
      const pixel = pixelAt(tile(), event);
      if (!pixel) return;
      if (state.pins.length === PIN_COLOURS.length) state.pins.shift();
      const used = new Set(state.pins.map((pin) => pin.colour));
      state.pins.push({...pixel, colour: PIN_COLOURS.find((c) => !used.has(c)), series: [], last: null});
      syncDepthWish();
      showPins();
      for (const t of state.tiles.values()) paint(t);
    });
  }
  listen($("view"), null);

  $("clear-pins").addEventListener("click", () => {
    state.pins = [];
    syncDepthWish();
    showPins();
    for (const t of state.tiles.values()) paint(t);
  });
  $("snapshot").addEventListener("click", async () => {
    const shown = orderedTiles().filter((t) => t.shown);
    if (!shown.length) return;
    const result = $("snapshot-result");
    result.textContent = "saving";
    try {
      // one request: each tile's frame (the server saves one per camera, as one snapshot against its rate)
      const query = shown.map((t) => `seq=${t.shown.seq}`).join("&");
      const response = await fetch(withToken(`/snapshot?${query}`), {method: "POST"});
      const body = await response.json();
      const stems = response.ok ? body.saved.filter((p) => p.endsWith("_rgb.png"))
        .map((p) => p.split("/").pop().replace(/_rgb\.png$/, "")) : [];
      result.textContent = !response.ok ? `not saved: ${body.error || response.status}`
        : stems.length === 1 ? `saved ${stems[0]}_{rgb,depth_mm,depth_color}.png`
        : `saved ${stems.length} cameras' frames: ${stems.join(", ")} (_rgb, _depth_mm, _depth_color .png)`;
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
