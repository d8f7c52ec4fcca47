"""Atomic file writes: readers never see a half-written file, and a crash leaves the previous
version in place."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path, value, indent: int = 1, sort_keys: bool = False) -> None:
    """``value`` as JSON (and a final newline), written with :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def write_npz_atomic(path, **arrays) -> Path:
    """``arrays`` as an uncompressed ``.npz`` at ``path`` (parents created), through a temporary
    file beside it and a rename; returns the path."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
