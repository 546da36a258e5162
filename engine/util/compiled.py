"""The parts compiled at install (setup.py: cffi modules built in place by `pip install -e .`)."""
from __future__ import annotations

import importlib


def compiled_module(name: str, what: str, otherwise: str = ""):
    """(ffi, lib) of the cffi module `name`; an ImportError saying that `what` is missing and how
    to get it back (then `otherwise`, another way, when there is one)."""
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{what} is missing ({e}): reinstall (`make setup`, or `pip install -e .` with a "
                          f"C compiler){otherwise}") from None
    return module.ffi, module.lib
