"""File edges: atomic output (nothing half-written ever carries the final name) and the one
guarded reader for JSON files users hand us."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    On any exception the temporary file is removed and the exception propagates, so an
    existing `target` is left untouched.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------- guarded JSON input

MAX_JSON_DEPTH = 64            # configs, presets and flags nest a few levels; nothing needs more
MAX_JSON_BYTES = 16 * 2 ** 20  # 16 MiB: model configs, presets, flags (datasets pass their own)


class JsonFileError(ValueError):
    """A JSON file (or text) a user handed us cannot be used; the message names it."""


def read_json(path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """The one reader for every JSON file a user hands us (model configs, experiment.json,
    presets, training configs, dataset indexes).

    Raises `JsonFileError` naming the file for: missing, a directory, unreadable, larger than
    `max_bytes`, not UTF-8, not JSON, or nested deeper than `max_depth`. Never executes anything.
    """
    path = Path(path)
    if not path.exists():
        raise JsonFileError(f"{path}: no such file")
    if path.is_dir():
        raise JsonFileError(f"{path}: is a directory, not a JSON file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise JsonFileError(f"{path}: {size:,} bytes, larger than the {max_bytes:,} a JSON file "
                                "of this kind may be")
        raw = path.read_bytes()
    except OSError as e:
        raise JsonFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_json(text, str(path), max_depth)


def parse_json(text: str, source: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with the errors of `read_json` (deep nesting included), naming `source`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonFileError(f"{source}: not valid JSON ({e})") from None
    except RecursionError:
        raise JsonFileError(f"{source}: JSON nested too deeply (more than {max_depth} levels)") from None
    depth = _json_depth(value)
    if depth > max_depth:
        raise JsonFileError(f"{source}: JSON nested {depth} levels deep (at most {max_depth})")
    return value


def _json_depth(value) -> int:
    """Nesting depth of lists/objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
