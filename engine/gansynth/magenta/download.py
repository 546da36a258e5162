"""Fetch an official GANSynth checkpoint zip, resumably, and verify it.

The zip goes to `<cache>/downloads/<name>.zip.part` first. A dropped connection
keeps the part file and the next run resumes it with an HTTP Range request; a
finished download is verified (every zip member's CRC) and a corrupt one is
deleted. `gansynth download` (engine/commands/download.py) then converts it with
`engine.gansynth.magenta.convert` into our model files.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

MODELS = ("acoustic_only", "all_instruments")
DEFAULT_BASE_URL = "https://storage.googleapis.com/magentadata/models/gansynth"
CHUNK_BYTES = 1 << 16


class DownloadError(Exception):
    """The download failed; the message says whether a resumable part file was kept."""


def data_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "gansynth-instrument"


def model_url(name: str, base_url: str = DEFAULT_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{name}.zip"


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "gansynth-instrument"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total_size(resp, start: int) -> int | None:
    """Full file size from Content-Range (206) or Content-Length (200), if the server says."""
    match = re.match(r"bytes (\d+)-\d+/(\d+)", resp.headers.get("Content-Range", ""))
    if resp.status == 206:
        if not match or int(match.group(1)) != start:
            raise DownloadError(f"server answered the range request for byte {start} with "
                                f"{resp.headers.get('Content-Range')!r}")
        return int(match.group(2))
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(url: str, dest, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming a part file left by an earlier run."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    try:
        try:
            resp = _open(url, start, timeout)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not start:
                raise
            part.unlink()  # range not satisfiable: the part file is stale; start over
            start, resp = 0, _open(url, 0, timeout)
        with resp:
            if resp.status not in (200, 206):
                raise DownloadError(f"{url}: unexpected HTTP status {resp.status}")
            if resp.status == 200:
                start = 0  # the server ignored the range: rewrite from the beginning
            total = _total_size(resp, start)
            _copy(resp, part, start, total, progress, dest.name)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException, OSError) as e:
        kept = part.stat().st_size if part.exists() else 0
        hint = f"; {kept} bytes kept in {part}, run the same command again to resume" if kept else ""
        raise DownloadError(f"{url}: download interrupted ({e}){hint}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: incomplete download ({size} of {total} bytes kept in {part}); "
                            "run the same command again to resume")
    verify_zip(part, remove_if_bad=True)
    os.replace(part, dest)
    return dest


def _copy(resp, part: Path, start: int, total: int | None, progress: bool, label: str) -> None:
    from tqdm import tqdm

    with open(part, "ab" if start else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, disable=not progress, file=sys.stderr) as bar:
        while True:
            chunk = resp.read(CHUNK_BYTES)
            if not chunk:
                break
            f.write(chunk)
            bar.update(len(chunk))


def verify_zip(path, remove_if_bad: bool = False) -> None:
    """Check the archive's directory and every member's CRC; delete it if asked and it is bad."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        problem = f"member {bad!r} fails its CRC check" if bad else None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError) as e:
        problem = f"not a valid zip archive ({e})"
    if problem:
        if remove_if_bad:
            path.unlink(missing_ok=True)
            problem += "; the corrupt download was deleted, run the command again"
        raise DownloadError(f"{path}: {problem}")
