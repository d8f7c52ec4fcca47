"""Where files named in configs and on command lines are: the data shipped inside the package, and
relative paths resolved against the current directory or the config file that named them.

* ``sample:cifar10`` is the CIFAR-10 sample shipped with acl-tf (500 training / 200 test images in
  ``acl_tf/data/sample/cifar10``), so the smoke configs run from any directory after
  ``pip install acl-tf``. Configs keep the name; readers expand it (:func:`expand_sample`).
* A relative path is looked up in the current directory, then beside the config file that named
  it; when neither holds it the error names both places.
* ``gs://...`` and other URLs, absolute paths and ``~`` paths are used as given.
* For a data source, a bare name that exists in neither place (``cifar10``) is a TFDS dataset.

No TensorFlow here: configs use this module while they load.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Optional

from acl_tf.core.errors import ConfigError

__all__ = ["GLOB_CHARS", "SAMPLE_PREFIX", "SAMPLE_ROOT", "expand_sample", "looks_like_path",
           "resolve_location", "sample_dir", "sample_names"]

SAMPLE_PREFIX = "sample:"
SAMPLE_ROOT = Path(__file__).resolve().parents[1] / "data" / "sample"
GLOB_CHARS = "*?["
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec", ".gz")


def sample_names() -> list[str]:
    """The samples shipped with the package (``cifar10``)."""
    return sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir()) if SAMPLE_ROOT.is_dir() \
        else []


def sample_dir(value: str) -> Path:
    """``"sample:cifar10"`` -> the directory of that shipped sample."""
    name = value[len(SAMPLE_PREFIX):] if value.startswith(SAMPLE_PREFIX) else value
    path = SAMPLE_ROOT / name
    if not name or not path.is_dir():
        raise ConfigError(f"Unknown shipped sample {value!r}; available: "
                          f"{[SAMPLE_PREFIX + n for n in sample_names()]}.")
    return path


def expand_sample(value):
    """``"sample:cifar10"`` -> the sample's directory (a string); anything else unchanged. Configs
    keep the ``sample:`` name, so a config compiled on one machine (a Vertex AI spec) still finds
    the sample installed on another."""
    if isinstance(value, str) and value.startswith(SAMPLE_PREFIX):
        return str(sample_dir(value))
    return value


def looks_like_path(text: str) -> bool:
    """Whether a string can only name files (rather than a TFDS dataset such as ``cifar10`` or
    ``cifar10_corrupted/fog_1``): explicitly relative or absolute, a glob, a list or a TFRecord."""
    if any(c in text for c in GLOB_CHARS + ","):
        return True
    if text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(text):
        return True
    base = os.path.basename(text).lower()
    return base.endswith(_TFRECORD_SUFFIXES) or ".tfrecord" in base


def _is_url(text: str) -> bool:
    return "://" in text


def _exists(path: str) -> bool:
    if any(c in path for c in GLOB_CHARS):
        return bool(glob.glob(path))
    return os.path.exists(path)


def _resolve_one(part: str, bases: list[Path], where: str, dataset: bool) -> str:
    if part.startswith(SAMPLE_PREFIX):
        try:
            sample_dir(part)                            # checked now, expanded where it is read
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        return part
    expanded = os.path.expanduser(part)
    if _is_url(part) or os.path.isabs(expanded):
        return expanded
    candidates = []
    for base in bases:
        candidate = os.path.normpath(os.path.join(base, expanded))
        if candidate not in candidates:
            candidates.append(candidate)
    for candidate in candidates:
        if _exists(candidate):
            return candidate
    if dataset and not looks_like_path(part):
        return part                                     # a TFDS dataset name
    places = " nor ".join(repr(c) for c in candidates)
    raise ConfigError(f"{where}: {part!r} is neither {places} (relative paths are looked up in "
                      f"the current directory, then beside the config file).")


def resolve_location(value: Optional[str], bases: Iterable, where: str = "path",
                     dataset: bool = False) -> Optional[str]:
    """``value`` as an absolute path (or URL, ``sample:NAME``, or TFDS name when ``dataset``),
    looked up in each of ``bases`` in turn; a comma-separated list is resolved part by part.

    Raises:
        ConfigError: naming every place looked in, when a relative path exists in none of them.
    """
    if value is None or value == "":
        return value
    bases = [Path(b) for b in bases]
    parts = [p.strip() for p in value.split(",")] if "," in value else [value]
    return ",".join(_resolve_one(p, bases, where, dataset) for p in parts if p)
