"""Soft pseudo-labels of a teacher classifier: computing them and the ``.npz`` artifact.

Step ii of semi-supervised adversarial training (reference section 4) labels every training
image with the teacher's soft prediction ``softmax(logits / T)``. The result is stored as one
NumPy ``.npz`` file (readable without TensorFlow, e.g. by a TFX component) holding:

=================  =============  ============================================================
key                dtype, shape   meaning
=================  =============  ============================================================
``ids``            str [N]        image ids (``acl_tf.data.ImageData.ids`` of the split)
``probs``          float32 [N,C]  soft pseudo-labels at temperature T (rows sum to 1)
``logits``         float32 [N,C]  the teacher's logits (``probs = softmax(logits / T)``)
``labels_true``    int64 [N]      ground-truth labels, for the accuracy diagnostic only
``is_labelled``    bool [N]       in the labelled subset the teacher was trained on
``is_validation``  bool [N]       in the validation hold-out (neither labelled nor unlabelled)
``temperature``    float64 []     T
``teacher``        str []         where the teacher came from (informational)
=================  =============  ============================================================

Images with neither flag are the unlabelled ones. :func:`save_pseudo_labels` writes through a
temporary file and renames it, so a reader never sees half a file; :func:`load_pseudo_labels`
checks every field and raises :class:`PseudoLabelError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import PseudoLabelError  # noqa: F401 (re-exported)
from acl_tf.core.io import write_npz_atomic

__all__ = ["PseudoLabelError", "PseudoLabels", "FIELDS", "predict_logits", "make_pseudo_labels",
           "save_pseudo_labels", "load_pseudo_labels"]

FIELDS = ("ids", "probs", "logits", "labels_true", "is_labelled", "is_validation",
          "temperature", "teacher")
_PROB_TOLERANCE = 1e-3



@dataclasses.dataclass
class PseudoLabels:
    """Soft pseudo-labels of N images (see the module docstring for the fields)."""

    ids: np.ndarray
    probs: np.ndarray
    logits: np.ndarray
    labels_true: np.ndarray
    is_labelled: np.ndarray
    is_validation: np.ndarray
    temperature: float
    teacher: str = ""

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels_true = np.asarray(self.labels_true)
        self.is_labelled = np.asarray(self.is_labelled)
        self.is_validation = np.asarray(self.is_validation)
        self.temperature = float(self.temperature)
        self.teacher = str(self.teacher)
        _validate(self, "PseudoLabels")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def is_unlabelled(self) -> np.ndarray:
        return ~(self.is_labelled | self.is_validation)

    @property
    def hard_labels(self) -> np.ndarray:
        """The arg-max pseudo-label of every image (int64 [N])."""
        return np.argmax(self.probs, axis=1).astype(np.int64)

    def accuracy(self, mask: Optional[np.ndarray] = None) -> float:
        """Fraction of images (within ``mask``) whose arg-max pseudo-label is the true label."""
        hits = self.hard_labels == self.labels_true
        if mask is not None:
            hits = hits[np.asarray(mask, dtype=bool)]
        return float(hits.mean()) if hits.size else float("nan")

    def diagnostics(self) -> dict:
        """Pseudo-label accuracy over all images (the paper's figure) and per subset, and counts."""
        return {"pseudo_label_accuracy": self.accuracy(),
                "pseudo_label_accuracy_labelled": self.accuracy(self.is_labelled),
                "pseudo_label_accuracy_unlabelled": self.accuracy(self.is_unlabelled),
                "pseudo_label_accuracy_validation": self.accuracy(self.is_validation),
                "num_images": len(self),
                "num_labelled": int(self.is_labelled.sum()),
                "num_unlabelled": int(self.is_unlabelled.sum()),
                "num_validation": int(self.is_validation.sum()),
                "temperature": self.temperature}


def _validate(pl: PseudoLabels, where: str) -> None:
    n = len(pl.ids)
    if pl.ids.ndim != 1:
        raise PseudoLabelError(f"{where}: 'ids' must be 1-D, got shape {pl.ids.shape}.")
    if len(set(pl.ids.tolist())) != n:
        raise PseudoLabelError(f"{where}: 'ids' are not unique.")
    for name in ("probs", "logits"):
        value = getattr(pl, name)
        if value.ndim != 2 or value.shape[0] != n or value.shape[1] < 2:
            raise PseudoLabelError(f"{where}: {name!r} must have shape [{n}, C] with C >= 2 "
                                   f"(one row per id), got {value.shape}.")
        if not np.all(np.isfinite(value)):
            raise PseudoLabelError(f"{where}: {name!r} holds non-finite values.")
    if pl.logits.shape != pl.probs.shape:
        raise PseudoLabelError(f"{where}: 'logits' {pl.logits.shape} and 'probs' "
                               f"{pl.probs.shape} differ in shape.")
    if n and (pl.probs.min() < 0 or np.abs(pl.probs.sum(axis=1) - 1).max() > _PROB_TOLERANCE):
        raise PseudoLabelError(f"{where}: 'probs' rows must be probability vectors (>= 0, "
                               "summing to 1).")
    if pl.labels_true.shape != (n,) or not np.issubdtype(pl.labels_true.dtype, np.integer):
        raise PseudoLabelError(f"{where}: 'labels_true' must be integers of shape ({n},), got "
                               f"{pl.labels_true.dtype} {pl.labels_true.shape}.")
    pl.labels_true = pl.labels_true.astype(np.int64)
    bad = np.flatnonzero((pl.labels_true < 0) | (pl.labels_true >= pl.probs.shape[1]))
    if bad.size:
        raise PseudoLabelError(f"{where}: 'labels_true' {pl.labels_true[bad[0]]} of id "
                               f"{pl.ids[bad[0]]!r} is outside [0, {pl.probs.shape[1]}).")
    for name in ("is_labelled", "is_validation"):
        value = getattr(pl, name)
        if value.shape != (n,) or value.dtype != bool:
            raise PseudoLabelError(f"{where}: {name!r} must be bool of shape ({n},), got "
                                   f"{value.dtype} {value.shape}.")
    both = np.flatnonzero(pl.is_labelled & pl.is_validation)
    if both.size:
        raise PseudoLabelError(f"{where}: id {pl.ids[both[0]]!r} is both labelled and in the "
                               "validation split.")
    if not (np.isfinite(pl.temperature) and pl.temperature > 0):
        raise PseudoLabelError(f"{where}: 'temperature' must be positive, got {pl.temperature}.")


# -- computing them ------------------------------------------------------------------------------
def predict_logits(model, images, *, branch: Optional[str] = None,
                   batch_size: int = 256) -> np.ndarray:
    """Logits ``[N, C]`` (float32) of ``model`` in inference mode, batch by batch.

    ``images``: uint8 ``[N, H, W, 3]`` or float in [0, 1]; ``branch``: BN branch (None: the
    model's default).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    images = np.asarray(images)
    kwargs = {"branch": branch} if branch is not None else {}

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False, **kwargs)

    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        out.append(predict(tf.constant(x)).numpy())
    if not out:
        raise ValueError("predict_logits needs at least one image.")
    return np.concatenate(out).astype(np.float32)


def make_pseudo_labels(model, data, *, is_labelled, is_validation, temperature: float = 1.0,
                       branch: Optional[str] = None, batch_size: int = 256,
                       teacher: str = "") -> PseudoLabels:
    """Labels every image of ``data`` (an :class:`acl_tf.data.ImageData`) with ``model``'s soft
    prediction at ``temperature``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    logits = predict_logits(model, data.images, branch=branch, batch_size=batch_size)
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=1, keepdims=True)
    return PseudoLabels(ids=data.ids, probs=probs.astype(np.float32), logits=logits,
                        labels_true=data.labels, is_labelled=np.asarray(is_labelled, bool),
                        is_validation=np.asarray(is_validation, bool), temperature=temperature,
                        teacher=teacher)


# -- the artifact --------------------------------------------------------------------------------
def save_pseudo_labels(path, pseudo_labels: PseudoLabels) -> Path:
    """Writes ``pseudo_labels`` to ``path`` (``.npz``) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise PseudoLabelError(f"pseudo-label file {str(path)!r} must end in .npz.")
    return write_npz_atomic(
        path, ids=pseudo_labels.ids, probs=pseudo_labels.probs, logits=pseudo_labels.logits,
        labels_true=pseudo_labels.labels_true, is_labelled=pseudo_labels.is_labelled,
        is_validation=pseudo_labels.is_validation,
        temperature=np.float64(pseudo_labels.temperature),
        teacher=np.asarray(pseudo_labels.teacher))


def load_pseudo_labels(path) -> PseudoLabels:
    """Reads and checks a pseudo-label ``.npz`` written by :func:`save_pseudo_labels`.

    Raises:
        PseudoLabelError: the file is missing or not an ``.npz``, lacks a field, or its fields
            are inconsistent (the message names the file and the field).
    """
    path = Path(path)
    if path.is_dir():
        path = path / rd.PSEUDO_LABELS
    if not path.is_file():
        raise PseudoLabelError(f"pseudo-label file {str(path)!r} does not exist (run "
                               "`python -m acl_tf.semisup --step=pseudo_label` first).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in FIELDS if k not in archive.files]
            if missing:
                raise PseudoLabelError(f"{path}: missing field(s) {missing}; a pseudo-label file "
                                       f"holds {list(FIELDS)}.")
            values = {k: archive[k] for k in FIELDS}
    except PseudoLabelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise PseudoLabelError(f"{path}: not a readable .npz file ({err}).") from err
    for name in ("temperature", "teacher"):
        if values[name].shape != ():
            raise PseudoLabelError(f"{path}: {name!r} must be a scalar, got shape "
                                   f"{values[name].shape}.")
    values["temperature"] = float(values["temperature"])
    values["teacher"] = str(values["teacher"])
    try:
        return PseudoLabels(**values)
    except PseudoLabelError as err:
        raise PseudoLabelError(str(err).replace("PseudoLabels:", f"{path}:", 1)) from None
