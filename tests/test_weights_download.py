"""The download path against a local HTTP server: resumable, atomic, strict-load checked, hash pinned."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import smoothdino.models.checkpoints as ck
from smoothdino.cli import app

from .spec_keys import save_official


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `root`, honouring `Range: bytes=N-` like the release server."""

    root: Path = Path(".")
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        path = self.root / self.path.lstrip("/")
        self.requests.append(self.headers.get("Range") or "full")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path, monkeypatch):
    root = tmp_path / "server"
    (root / "dinov2_vits14").mkdir(parents=True)
    handler = type("H", (RangeHandler,), {"root": root, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(ck, "RELEASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    yield root, handler
    httpd.shutdown()


def test_fetch_resumes_checks_and_pins(server, home):
    root, handler = server
    served = root / "dinov2_vits14" / "dinov2_vits14_nyu_linear4_head.pth"
    save_official(served, "vits14", "linear4")
    cache = home / "weights"
    cache.mkdir(parents=True)
    data = served.read_bytes()
    (cache / (served.name + ".part")).write_bytes(data[: len(data) // 2])  # an interrupted download
    result = CliRunner().invoke(app, ["weights", "fetch", "vits14", "--kind", "linear4"])
    assert result.exit_code == 0, result.output
    assert handler.requests == [f"bytes={len(data) // 2}-"]  # resumed, not restarted
    final = cache / served.name
    assert final.read_bytes() == data and not (cache / (served.name + ".part")).exists()
    assert ck.pinned_hash(final) == ck.sha256_of(final)
    verify = CliRunner().invoke(app, ["weights", "verify", "vits14"])
    assert verify.exit_code == 0 and "ok" in verify.output


def test_fetch_rejects_a_foreign_file(server, home):
    root, _ = server
    save_official(root / "dinov2_vits14" / "dinov2_vits14_pretrain.pth", "vitb14", "backbone")  # wrong arch
    result = CliRunner().invoke(app, ["weights", "fetch", "vits14", "--kind", "backbone"])
    assert result.exit_code == 2
    assert "does not load as dinov2_vits14_pretrain.pth" in result.output
    assert not (home / "weights" / "dinov2_vits14_pretrain.pth").exists()  # never under the final name
    assert (home / "weights" / "dinov2_vits14_pretrain.rejected").exists()


def test_offline_fetch_says_where_to_put_files(home, monkeypatch):
    monkeypatch.setattr(ck, "RELEASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    result = CliRunner().invoke(app, ["weights", "fetch", "vits14", "--kind", "backbone"])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(home / "weights") in error[0] and "--weights-dir" in error[0]


def test_verify_names_a_truncated_file(tmp_path, home):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    save_official(path, "vits14", "backbone")
    path.write_bytes(path.read_bytes()[:1000])
    result = CliRunner().invoke(app, ["weights", "verify", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(path) in result.output


def test_info_lists_backends_and_cache(home):
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert "onnxruntime" in result.output and "weights cache" in result.output and "tensorrt" in result.output
