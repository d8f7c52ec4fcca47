"""What every custom component needs between TFX artifacts and the ``acl_tf`` library.

The library reads and writes local paths (``pathlib``, ``glob``). Under the local runner
artifact URIs are local directories and are used as they are; on Vertex AI / Kubeflow they are
``gs://...`` (or another ``tf.io.gfile`` filesystem), so :func:`local_input` copies an input
artifact into a temporary local directory first and :func:`local_output` uploads what the
library wrote once it has finished (a component that fails uploads nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Iterator

import tensorflow as tf

from acl_tf import data as data_lib
from pipeline.config import TEST_SPLIT, TRAIN_SPLIT

__all__ = ["TRAIN_SPLIT", "TEST_SPLIT", "is_remote", "copy_tree", "local_input",
           "local_output", "with_examples", "check_split", "load_split", "split_names"]


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a non-local filesystem (``gs://``, ``s3://``, ``ram://``...)."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def _strip_file_scheme(uri: str) -> str:
    return uri[len("file://"):] if str(uri).startswith("file://") else str(uri)


def copy_tree(src: str, dst: str) -> None:
    """Recursively copies directory ``src`` to ``dst`` through ``tf.io.gfile`` (any filesystem)."""
    if not tf.io.gfile.isdir(src):
        raise FileNotFoundError(f"no such artifact directory: {src}")
    for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, src) if root != src else ""
        target = os.path.join(dst, rel) if rel else dst
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name),
                             overwrite=True)


@contextlib.contextmanager
def local_input(uri: str) -> Iterator[str]:
    """A local directory holding the artifact at ``uri`` (a temporary copy if it is remote)."""
    if not is_remote(uri):
        yield _strip_file_scheme(uri)
        return
    tmp = tempfile.mkdtemp(prefix="artifact-in-")
    try:
        local = os.path.join(tmp, "artifact")
        copy_tree(uri, local)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_output(uri: str) -> Iterator[str]:
    """A local directory to write the artifact at ``uri`` into (uploaded on success)."""
    if not is_remote(uri):
        path = _strip_file_scheme(uri)
        os.makedirs(path, exist_ok=True)
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="artifact-out-")
    try:
        yield tmp
        copy_tree(tmp, uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def with_examples(config, examples_dir: str):
    """``config`` (any library config with a ``data`` section) reading from ``examples_dir``."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                source=str(examples_dir)))


def split_names(examples) -> list[str]:
    """The split names recorded on an ``Examples`` artifact (``["train"]``...)."""
    from tfx.types import artifact_utils

    return list(artifact_utils.decode_split_names(examples.split_names or "[]"))


def check_split(examples, split: str) -> None:
    """Raises :class:`acl_tf.data.DataError` when the ``Examples`` artifact lacks ``split``."""
    names = split_names(examples)
    if names and split not in names:
        raise data_lib.DataError(f"the Examples artifact {examples.uri} has no split {split!r} "
                                 f"(it has {names})")


def load_split(examples, examples_dir: str, split: str, data_config, limit=None):
    """The images of ``split`` of an ``Examples`` artifact, read by :func:`acl_tf.data.load`.

    Raises :class:`acl_tf.data.DataError` naming the split and the artifact when the artifact
    has no such split, or naming the file and record when the data is malformed.
    """
    check_split(examples, split)
    return data_lib.load(examples_dir, split, image_size=data_config.image_size,
                         num_classes=data_config.num_classes, limit=limit)
