"""`gansynth download` against a real HTTP server on 127.0.0.1 serving a fixture checkpoint zip.

The server (http.server in a thread) honours Range requests and can drop the connection
part-way, ignore ranges, or serve corrupt bytes, so resume and clean-up are exercised for real.
"""
from __future__ import annotations

import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from engine import load_synth
from engine.commands.cli import main as cli_main
from engine.gansynth.magenta.download import DownloadError, fetch, verify_zip

HIRES = Path(__file__).parent / "fixtures" / "magenta" / "hires_ema"


def _fixture_zip(compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for f in sorted(HIRES.rglob("*")):
            if f.is_file() and f.name != "manifest.json":
                zf.write(f, f"acoustic_only/{f.relative_to(HIRES)}")
    return buf.getvalue()


PAYLOAD = _fixture_zip()


class ZipServer:
    """Serves /acoustic_only.zip; records each request's Range header."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.cut_after: int | None = None  # drop the connection after this many body bytes (once)
        self.ignore_range = False
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append(rng)
                if self.path != "/acoustic_only.zip":
                    self.send_error(404)
                    return
                data = server.payload
                start = int(rng[len("bytes="):-1]) if rng and not server.ignore_range else 0
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[:server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    s = ZipServer(PAYLOAD)
    yield s
    s.close()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def _download(server, out, *extra):
    return cli_main(["download", "acoustic_only", "-o", str(out), "--base-url", server.base_url,
                     "--no-progress", *extra])


def test_download_verifies_and_imports(server, dirs, capsys):
    out = dirs / "model"
    assert _download(server, out) == 0
    assert server.requests == [None]
    synth = load_synth(out, device="cpu")
    assert synth.meta["provenance"]["weights"] == "ema" and synth.latent_size == 16
    cache = dirs / "cache" / "gansynth-instrument"
    assert not (cache / "downloads" / "acoustic_only.zip").exists()  # zip and extraction cleaned up
    assert list((cache / "magenta").iterdir()) == []
    assert str(out) in capsys.readouterr().out


def test_default_output_dir_and_keep_zip(server, dirs):
    assert cli_main(["download", "acoustic_only", "--base-url", server.base_url, "--no-progress", "--keep-zip"]) == 0
    assert (dirs / "data" / "gansynth-instrument" / "models" / "acoustic_only" / "config.json").is_file()
    kept = dirs / "cache" / "gansynth-instrument" / "downloads" / "acoustic_only.zip"
    assert kept.read_bytes() == PAYLOAD


def test_resume_after_a_dropped_connection(server, dirs, capsys):
    out = dirs / "model"
    part = dirs / "cache" / "gansynth-instrument" / "downloads" / "acoustic_only.zip.part"
    server.cut_after = 100_000
    assert _download(server, out) == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    assert part.stat().st_size == 100_000
    assert not (out / "config.json").exists()
    assert _download(server, out, "--keep-zip") == 0
    assert server.requests == [None, "bytes=100000-"]
    assert not part.exists()
    assert part.with_name("acoustic_only.zip").read_bytes() == PAYLOAD
    z = np.zeros((1, 16), np.float32)
    assert np.array_equal(load_synth(out, device="cpu").generate_specgrams(z, [60]),
                          load_synth(HIRES, device="cpu").generate_specgrams(z, [60]))


def test_server_ignoring_range_restarts_cleanly(server, dirs):
    dest = dirs / "x.zip"
    server.cut_after = 50_000
    with pytest.raises(DownloadError, match="resume"):
        fetch(server.base_url + "/acoustic_only.zip", dest, progress=False)
    server.ignore_range = True
    fetch(server.base_url + "/acoustic_only.zip", dest, progress=False)
    assert server.requests == [None, "bytes=50000-"]
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_larger_than_the_file_starts_over(server, dirs):
    dest = dirs / "x.zip"
    dest.with_name("x.zip.part").write_bytes(b"\0" * (len(PAYLOAD) + 10))
    fetch(server.base_url + "/acoustic_only.zip", dest, progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("corruption", ["flipped_member_byte", "not_a_zip", "deflate_damage"])
def test_corrupt_download_is_deleted(server, dirs, capsys, corruption):
    if corruption == "flipped_member_byte":
        data = bytearray(PAYLOAD)
        data[len(data) // 3] ^= 0xFF  # inside a stored member: the zip is intact, the CRC is not
        server.payload = bytes(data)
        match = "fails its CRC check"
    elif corruption == "not_a_zip":
        server.payload = b"<html>quota exceeded</html>"
        match = "not a valid zip"
    else:
        data = bytearray(_fixture_zip(zipfile.ZIP_DEFLATED))
        data[len(data) // 3: len(data) // 3 + 64] = bytes(64)
        server.payload = bytes(data)
        match = "zip"
    assert _download(server, dirs / "model") == 1
    err = capsys.readouterr().err
    assert "deleted" in err and match in err
    downloads = dirs / "cache" / "gansynth-instrument" / "downloads"
    assert list(downloads.iterdir()) == []


def test_http_error_is_reported(server, dirs, capsys):
    assert cli_main(["download", "all_instruments", "-o", str(dirs / "m"), "--base-url", server.base_url,
                     "--no-progress"]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_unreachable_server_is_reported(dirs):
    with pytest.raises(DownloadError, match="interrupted"):
        fetch("http://127.0.0.1:9/none.zip", dirs / "n.zip", progress=False, timeout=5)


def test_verify_zip_accepts_good_archive(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(PAYLOAD)
    verify_zip(path)
    assert path.exists()
    assert zipfile.ZipFile(path).testzip() is None
