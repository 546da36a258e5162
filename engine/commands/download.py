"""`gansynth download`: fetch an official GANSynth checkpoint zip and import it.

    gansynth download acoustic_only -o models/acoustic_only

A dropped connection resumes on the next run (engine/gansynth/magenta/download.py); the
verified zip is converted into our model files, then removed unless `--keep-zip`.
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

from engine.gansynth.magenta.convert import import_checkpoint
from engine.gansynth.magenta.download import (DEFAULT_BASE_URL, MODELS, DownloadError, data_root, fetch,
                                              model_url, verify_zip)
from engine.gansynth.magenta.files import MagentaImportWarning, cache_root, extraction_dir
from engine.gansynth.modelfile import ModelFileError


def add_arguments(p) -> None:
    p.add_argument("name", choices=MODELS, help="which official checkpoint")
    p.add_argument("-o", "--out", default=None,
                   help="model directory to write (default: <data dir>/models/NAME)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"where the zips live (default {DEFAULT_BASE_URL})")
    p.add_argument("--keep-zip", action="store_true", help="keep the downloaded zip in the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    out = Path(args.out) if args.out else data_root() / "models" / args.name
    url = model_url(args.name, args.base_url)
    zip_path = cache_root() / "downloads" / f"{args.name}.zip"
    try:
        if not zip_path.exists():
            print(f"downloading {url}", file=sys.stderr)
            fetch(url, zip_path, progress=not args.no_progress)
        else:
            verify_zip(zip_path, remove_if_bad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MagentaImportWarning)  # printed below from meta
            model_dir, meta = import_checkpoint(zip_path, out)
    except (DownloadError, ModelFileError) as e:
        print(f"gansynth download: {e}", file=sys.stderr)
        return 1
    for message in meta.get("warnings", []):
        print(f"warning: {message}", file=sys.stderr)
    if not args.keep_zip:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(extraction_dir(meta["zip_sha256"]), ignore_errors=True)
    print(f"wrote {model_dir}")
    return 0
