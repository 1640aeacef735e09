"""`smoothdino live` with its real window, on Xvfb with a window manager: what is on the screen (captured from the
X server, not our frame buffer), the q and s keys, and a machine without a display (live goes on headless, never
aborts)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from smoothdino.edge.machine.display import (
    parse_x_display,
    window_unavailable_reason,
    x_server_reachable,
)
from smoothdino.edge.sinks.view import NO_DEPTH_BGR, depth_legend, legend_layout, text_scale
from smoothdino.edge.sources.synthetic import SyntheticScene

SMOOTHDINO = [str(Path(sys.executable).with_name("smoothdino"))]  # the console script, as a user runs it
VIDEO_SIZE = (140, 196)  # twice the export's 70x98: live resizes, and the overlay band leaves rows of plain RGB
VIDEO_FPS = 15.0
START_TIMEOUT = 90.0  # seconds for the subprocess to load the export and open its window (2 shared cores)


# -- the X server and the video --------------------------------------------------------------------

@pytest.fixture(scope="module")
def desktop():
    """A private X display (":N"): Xvfb with a window manager (openbox), as on a user's desktop. Without a window
    manager, the Qt xcb plugin inside opencv-python lost its window's MapNotify in some launches and then never
    painted it (black for the whole run): 2 launches in 15 of `live` on a fresh Xvfb, and about 4 in 10 of this
    module's window test; with openbox, 0 in 15 and 1 in 75 (that one's cause not found; 2026-12-07). Skips where
    Xvfb, openbox or the X client libraries are missing (`make test` installs Xvfb and openbox where it can)."""
    for program, package in (("Xvfb", "xvfb"), ("openbox", "openbox")):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install {package}; `make test` does it where it can)")
    pytest.importorskip("mss", reason="mss (dev extra) captures the screen")
    pytest.importorskip("Xlib", reason="python-xlib (dev extra) finds the window and sends keys")
    from Xlib import display as xdisplay

    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    name = f":{number}"
    manager = subprocess.Popen(["openbox", "--sm-disable"], env={**os.environ, "DISPLAY": name},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x = xdisplay.Display(name)
    check = x.intern_atom("_NET_SUPPORTING_WM_CHECK")  # an EWMH window manager sets it on the root once it manages
    deadline = time.monotonic() + 30
    while x.screen().root.get_full_property(check, 0) is None:
        if manager.poll() is not None or time.monotonic() > deadline:
            manager.kill()
            server.kill()
            pytest.fail(f"openbox did not take {name} (exit {manager.poll()})")
        time.sleep(0.05)
    x.close()
    yield name
    for process in (manager, server):
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """An 8 s MP4 of the synthetic moving scene: live replays it in real time and ends with it, so it must
    outlast the window checks on a loaded machine."""
    path = tmp_path_factory.mktemp("window") / "scene.mp4"
    height, width = VIDEO_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (width, height))
    assert writer.isOpened()
    for rgb, _ in SyntheticScene(height, width, frames=int(8 * VIDEO_FPS)):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded_frames(path: Path) -> np.ndarray:
    """Every frame as OpenCV decodes it (BGR): the live loop shows exactly these pixels."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr)
    capture.release()
    return np.stack(frames)


# -- talking to the X server as a user's desktop would ---------------------------------------------

def find_window(display, prefix: str, parent=None):
    """The mapped client window whose title starts with `prefix`, or None. The window manager puts each client
    window inside a frame of its own, so the search goes down the tree."""
    from Xlib.error import XError

    try:
        children = (parent or display.screen().root).query_tree().children
    except XError:  # destroyed since its parent listed it (the window manager's frames come and go)
        return None
    for window in children:
        try:
            if window.get_attributes().map_state != 2:  # IsViewable
                continue
            name = window.get_wm_name()
        except XError:
            continue
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        if name and name.startswith(prefix):
            return window
        found = find_window(display, prefix, window)
        if found is not None:
            return found
    return None


def window_box(display, window) -> tuple[int, int, int, int]:
    """(x, y, width, height) on the screen."""
    geometry = window.get_geometry()
    origin = window.translate_coords(display.screen().root, 0, 0)
    return -origin.x, -origin.y, geometry.width, geometry.height


def screenshot(display_name: str, box) -> np.ndarray:
    """The screen's pixels in `box` (BGR), read back from the X server."""
    import mss

    x, y, width, height = box
    with mss.MSS(display=display_name) as screen:
        shot = np.array(screen.grab({"left": x, "top": y, "width": width, "height": height}))
    return np.ascontiguousarray(shot[..., :3])


def press(display, window, key: str) -> None:
    """A key press and release through XTest, with the pointer in the window and the input focus on it, as
    after a user's click."""
    from Xlib import XK, X
    from Xlib.ext import xtest

    x, y, width, height = window_box(display, window)
    xtest.fake_input(display, X.MotionNotify, x=x + width // 2, y=y + height // 2)
    window.set_input_focus(X.RevertToPointerRoot, X.CurrentTime)
    code = display.keysym_to_keycode(XK.string_to_keysym(key))
    xtest.fake_input(display, X.KeyPress, code)
    xtest.fake_input(display, X.KeyRelease, code)
    display.sync()


def wait_for(condition, timeout: float, process: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"live exited ({process.returncode}) before {what}:\n{output[-3000:]}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{process.stdout.read()[-3000:] if process.stdout else ''}")


def on_turbo_map(bgr: np.ndarray) -> np.ndarray:
    """Per pixel: distance (max over channels) to the nearest colour of OpenCV's TURBO map."""
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO).reshape(256, 3)
    pixels = bgr.reshape(-1, 1, 3).astype(np.int16)
    return np.abs(pixels - turbo[None].astype(np.int16)).max(axis=2).min(axis=1).reshape(bgr.shape[:2])


def rendered_word(word: str, scale: float) -> np.ndarray:
    """`word` as OpenCV's Hershey font draws it, white on black, grey, cropped to its ink."""
    canvas = np.zeros((40, 120), np.uint8)
    cv2.putText(canvas, word, (4, 28), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas > 40)
    return canvas[ys.min() - 1:ys.max() + 2, xs.min() - 1:xs.max() + 2]


# -- the window ------------------------------------------------------------------------------------

@pytest.mark.alone
def test_live_window_on_screen_keys_q_and_s(desktop, video, small_export, tmp_path):
    from Xlib import display as xdisplay

    env = {**os.environ, "DISPLAY": desktop, "QT_QPA_PLATFORM": "xcb", "COLUMNS": "200"}
    snapshots = tmp_path / "snaps"
    process = subprocess.Popen(
        [*SMOOTHDINO, "live", "--engines", str(small_export), "--source", str(video), "--snapshots", str(snapshots),
         "--max-frames", "2000", "--threads", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        x = xdisplay.Display(desktop)
        window = wait_for(lambda: find_window(x, "smoothdino - "), START_TIMEOUT, process, "window")
        time.sleep(1.5)  # a few frames into the stream: the FPS line has a value
        box = window_box(x, window)
        height, width = VIDEO_SIZE
        legend = depth_legend(width, height)
        for _ in range(100):  # a loaded machine may paint the window late: up to 10 s of tries for a whole one
            shot = screenshot(desktop, box)
            if shot.shape[0] > height and np.array_equal(shot[height:, width:], legend):
                break
            time.sleep(0.1)

        # The window is the canvas and nothing else (no Qt toolbar): RGB | depth at the video's size, and under the
        # depth its colour bar (the default 0-10 m), pixel for pixel as drawn.
        assert shot.shape == (height + legend.shape[0], 2 * width, 3), box
        rgb_half, depth_half = shot[:height, :width], shot[:height, width:]
        assert np.array_equal(shot[height:, width:], legend)

        # RGB half: below the overlay band it is one of the video's frames, pixel for pixel.
        frames = decoded_frames(video)
        plain = slice(height - 40, height)
        errors = np.abs(frames[:, plain].astype(np.int16) - rgb_half[plain].astype(np.int16)).mean(axis=(1, 2, 3))
        assert errors.min() < 2.0, f"the window's left half matches no video frame (best mean error {errors.min():.1f})"
        shown = frames[int(errors.argmin())]

        # Depth half: colour-mapped (every pixel on the TURBO map, or the "no depth" colour where a carried frame's
        # depth does not reach: a strip as wide as the camera moved since the keyframe), not a copy of the frame.
        no_depth = np.abs(depth_half.astype(np.int16) - np.array(NO_DEPTH_BGR, np.int16)).max(axis=2)
        assert np.percentile(np.minimum(on_turbo_map(depth_half), no_depth), 99) <= 6
        assert (on_turbo_map(depth_half) <= 6).mean() > 0.02, "no depth shown at all"
        assert np.abs(depth_half.astype(np.int16) - shown.astype(np.int16)).mean() > 20

        # Overlay: the band over the top left of the RGB half is darkened (at most a quarter of the height), and the
        # FPS line is drawn in it in white.
        band = rgb_half[:20, :100]
        assert band.mean() < 0.6 * shown[:20, :100].mean()
        assert np.abs(rgb_half[height // 4:].astype(np.int16) - shown[height // 4:].astype(np.int16)).mean() < 2.0
        grey = cv2.cvtColor(rgb_half[:60], cv2.COLOR_BGR2GRAY)
        scale = text_scale(height)
        score = cv2.minMaxLoc(cv2.matchTemplate(grey, rendered_word("FPS", scale), cv2.TM_CCOEFF_NORMED))[1]
        assert score > 0.6, f"no 'FPS' text in the overlay (match {score:.2f})"
        white = (rgb_half[:60] > 200).all(axis=2)
        assert white.sum() > 40, "no bright text pixels in the overlay"
        red = (rgb_half[:20, :, 2] > 200) & (rgb_half[:20, :, :2] < 140).all(axis=2)
        assert red.sum() > 20, "the RANDOM WEIGHTS line is missing"

        # s: a snapshot (three files), named in a notice line. A frame may show no depth at all (0 everywhere: a
        # keyframe too old to carry on a slow machine); the millimetre check below needs one with depth: s again
        for tries in range(1, 6):
            press(x, window, "s")
            saved = wait_for(lambda: sorted(snapshots.glob("*.png")) if len(list(snapshots.glob("*.png"))) >= 3 * tries
                             else None, 30, process, "snapshot files")
            depth_file = sorted(p for p in saved if p.name.endswith("_depth_mm.png"))[-1]
            if (cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED) > 0).mean() > 0.5:
                break
            time.sleep(0.3)
        # q: quits, exit 0, quickly.
        pressed = time.monotonic()
        press(x, window, "q")
        output, _ = process.communicate(timeout=30)
        quit_seconds = time.monotonic() - pressed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    assert quit_seconds < 10, f"q took {quit_seconds:.1f} s"
    assert "live: " in output and " frames, " in output, output[-2000:]

    assert len(saved) == 3 * tries, saved  # three files a press
    stem = depth_file.name[: -len("_depth_mm.png")]
    rgb_file, colour_file = depth_file.with_name(f"{stem}_rgb.png"), depth_file.with_name(f"{stem}_depth_color.png")
    notice = " ".join(output.split())
    for path in saved:
        assert path.name in notice, f"{path.name} is not named in the output"
    assert "random weights" in notice.lower()

    rgb = cv2.imread(str(rgb_file), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (height, width, 3)
    assert np.abs(frames.astype(np.int16) - rgb.astype(np.int16)).mean(axis=(1, 2, 3)).min() < 1.0  # a whole video frame
    depth_mm = cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (height, width)
    # millimetres of a finite positive depth, not metres rounded to 0 (a carried frame's uncovered strip is 0 = no depth)
    assert (depth_mm > 0).mean() > 0.5 and np.median(depth_mm[depth_mm > 0]) > 100
    colour = cv2.imread(str(colour_file), cv2.IMREAD_UNCHANGED)
    assert colour.shape == (height + legend.shape[0], width, 3)
    # The colour PNG is the 16-bit depth through TURBO (0-10 m, near = warm), recomputed here from the mm file, no
    # depth (0) in its own colour; under it the colour bar.
    index = (255 * (1 - np.clip(depth_mm / 10000.0, 0, 1))).astype(np.uint8)
    expected = cv2.applyColorMap(index, cv2.COLORMAP_TURBO)
    expected[depth_mm == 0] = NO_DEPTH_BGR
    assert np.abs(colour[:height].astype(np.int16) - expected.astype(np.int16)).max() <= 8
    assert np.array_equal(colour[height:], legend)


def test_closing_the_window_ends_live(desktop, video, small_export, tmp_path):
    """What a window manager sends when the user clicks the close button (WM_DELETE_WINDOW): live ends, exit 0,
    instead of running on without a window."""
    from Xlib import X, protocol
    from Xlib import display as xdisplay

    env = {**os.environ, "DISPLAY": desktop, "QT_QPA_PLATFORM": "xcb", "COLUMNS": "200"}
    process = subprocess.Popen([*SMOOTHDINO, "live", "--engines", str(small_export), "--source", str(video),
                                "--max-frames", "2000", "--threads", "1"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        x = xdisplay.Display(desktop)
        window = wait_for(lambda: find_window(x, "smoothdino - "), START_TIMEOUT, process, "window")
        time.sleep(1.0)
        protocols, delete = x.intern_atom("WM_PROTOCOLS"), x.intern_atom("WM_DELETE_WINDOW")
        window.send_event(protocol.event.ClientMessage(window=window, client_type=protocols,
                                                       data=(32, [delete, X.CurrentTime, 0, 0, 0])))
        x.flush()
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    assert "continuing without a window" not in output
    frames = int(re.search(r"live: (\d+) frames", output)[1])
    assert 0 < frames < 2000


# -- no display: live goes on headless --------------------------------------------------------------

@pytest.mark.parametrize("display", [None, ":87"], ids=["no-DISPLAY", "no-X-server"])
def test_live_without_display_runs_headless(display, video, small_export, tmp_path):
    """OpenCV's Qt build aborts the process when it cannot reach an X server; live must not."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display:
        env["DISPLAY"] = display
    done = subprocess.run([*SMOOTHDINO, "live", "--engines", str(small_export), "--source", str(video),
                           "--max-frames", "3", "--no-async", "--out", str(tmp_path / "out"), "--threads", "1"],
                          cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
                          check=False)
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, output[-2000:]
    assert "no window:" in output
    assert ("no $DISPLAY" if display is None else f"DISPLAY={display}") in output
    assert len(list((tmp_path / "out" / "depth").glob("*.png"))) == 3
    assert not (tmp_path / "snapshots").exists()


# -- snapshots, without a display -------------------------------------------------------------------

def test_snapshot_files(tmp_path, monkeypatch):
    """What `s` writes, checked without a window: the RGB frame as is, depth in whole millimetres, colour depth."""
    from smoothdino.edge.sinks import WindowSink

    monkeypatch.delenv("DISPLAY", raising=False)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.5, (12, 16)).astype(np.float32)
    paths = WindowSink("t", tmp_path / "snaps", random_weights=True).save_snapshot("000042", rgb, depth)
    assert [p.name.split("-000042")[1] for p in paths] == ["_rgb.png", "_depth_mm.png", "_depth_color.png"]
    assert np.array_equal(cv2.imread(str(paths[0]))[..., ::-1], rgb)
    depth_mm = cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16 and np.abs(depth_mm.astype(np.float64) - depth * 1000.0).max() <= 0.5
    colour = cv2.imread(str(paths[2]))
    assert colour.shape == (12 + legend_layout(16, 12).height, 16, 3)  # the colour bar below the depth
    colour = colour[:12]
    assert np.percentile(on_turbo_map(colour), 99) <= 6
    near, far = np.unravel_index(depth.argmin(), depth.shape), np.unravel_index(depth.argmax(), depth.shape)
    assert colour[near][2] > colour[near][0] and colour[far][0] > colour[far][2]  # near warm (red), far cool (blue)


def test_snapshot_on_a_full_or_missing_disk_is_one_notice(tmp_path, monkeypatch, capsys):
    from smoothdino.edge.sinks import WindowSink

    monkeypatch.delenv("DISPLAY", raising=False)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    sink = WindowSink("t", blocked / "snaps")
    assert sink.save_snapshot("000001", np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.float32)) == []
    assert "snapshot not saved" in " ".join(capsys.readouterr().err.split())
    assert list(tmp_path.iterdir()) == [blocked]


# -- the display check itself --------------------------------------------------------------------------

@pytest.mark.parametrize("text, parsed", [(":0", ("", 0)), (":1.0", ("", 1)), ("unix:2", ("", 2)),
                                          ("localhost:10.0", ("localhost", 10)), ("host/example:3", ("example", 3)),
                                          ("nonsense", None), ("", None)])
def test_parse_x_display(text, parsed):
    assert parse_x_display(text) == parsed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X sockets and the $DISPLAY check are Linux's")
def test_x_server_reachable_needs_a_listener(tmp_path, monkeypatch):
    monkeypatch.setattr("smoothdino.edge.machine.display.X11_SOCKETS", str(tmp_path))
    number = 4000 + os.getpid() % 1000  # no abstract socket of this name exists on a test machine
    assert not x_server_reachable(f":{number}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / f"X{number}"))
        listener.listen(1)
        assert x_server_reachable(f":{number}")
        assert window_unavailable_reason({"DISPLAY": f":{number}"}) is None
    assert window_unavailable_reason({"DISPLAY": f":{number}"}) == f"no X server answers at DISPLAY=:{number}"
    assert window_unavailable_reason({}) == "no $DISPLAY"
