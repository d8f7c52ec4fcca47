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
