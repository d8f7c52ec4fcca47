"""Importing a published PyTorch checkpoint of the reference code into an acl-tf run directory.

    import_checkpoint("ACL_DS.pt", "runs/acl_ds")        # encoder.keras, pretrainer.keras
    import_checkpoint("ACL_DS_TUNE.pt", "runs/tune")     # encoder.keras, best.keras, saved_model/1/

:func:`import_checkpoint` reads the file with PyTorch (``torch.load(map_location="cpu",
weights_only=True)``: tensors and plain containers only, no arbitrary Python objects), finds the
state dict in it, maps it onto acl-tf's models (:mod:`acl_tf.models.convert`: the layouts, the key
mapping, the input normalisation) and writes, into a new directory:

=======================  =========================================================================
``encoder.keras``        always: the encoder, both BN branches where the checkpoint has them; what
                         ``finetune`` / ``linear_eval`` / ``semisup`` take as the pre-trained model
``pretrainer.keras``     the checkpoint has the reference's projection head (``fc.fc1``, ...):
                         encoder + head as an :class:`~acl_tf.trainers.pretrainer.ACLPretrainer`
                         (variant ``ds`` with dual BN, ``s2s`` without: a checkpoint does not say)
``best.keras``           the checkpoint has a linear ``fc``: the :class:`~acl_tf.models.Classifier`
                         that ``evaluate`` reads from a run directory
``saved_model/1/``       the same classifier as a SavedModel with the usual signatures
                         (:mod:`acl_tf.serving.export`; ``export=False`` skips it)
``imported.json``        the source file (name, size, SHA-256), the layout, architecture,
                         normalisation, and every key or entry not imported, with the reason
=======================  =========================================================================

Where the state dict is in the file: the file itself when it is a plain ``{name: tensor}``
mapping; else its ``state_dict`` or ``model`` entry (the reference's training scripts save
``{'epoch', 'state_dict', 'optim', ...}``), or the entry ``state_dict_key`` names. The other
entries (epoch, optimizer state, accuracies) are not model weights: ``imported.json`` lists them.
A ``module.`` prefix (``nn.DataParallel``) is removed; ``key_prefix`` keeps only the keys under a
prefix (``encoder_k.``: DynACL's whole momentum model).

PyTorch is needed to read the file only: ``pip install "acl-tf[torch]"``.
:func:`import_state_dict` does the rest from a checkpoint already in memory (NumPy arrays).
"""

from __future__ import annotations

import datetime
import hashlib
import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from absl import logging

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import CheckpointError, RunDirError
from acl_tf.core.io import write_json_atomic

__all__ = ["STATE_DICT_KEYS", "import_checkpoint", "import_state_dict", "load_torch_checkpoint",
           "unwrap_checkpoint"]

#: Entries of a checkpoint dict that hold the state dict (the reference's training scripts).
STATE_DICT_KEYS = ("state_dict", "model")


def _to_numpy(value, torch):
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        return tensor.numpy()
    if isinstance(value, Mapping):
        return {k: _to_numpy(v, torch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v, torch) for v in value)
    return value


def load_torch_checkpoint(path) -> Any:
    """The contents of a PyTorch checkpoint file, tensors as NumPy arrays (floats as float32).

    Loads with ``weights_only=True`` on the CPU. Raises :class:`CheckpointError` when PyTorch is
    not installed (install the ``torch`` extra), the file does not exist or is unreadable, or it
    holds Python objects that ``weights_only`` refuses to unpickle.
    """
    path = Path(path)
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            "reading a PyTorch checkpoint needs PyTorch, which is not installed: "
            "pip install \"acl-tf[torch]\" (the CPU build is enough).") from err
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused it ({first}). It stores Python "
            "objects besides tensors, which acl-tf does not unpickle; save its state dict alone "
            "(torch.save(checkpoint['state_dict'], 'weights.pt')) where you trust the file, and "
            "import that.") from err
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: "
                              f"{type(err).__name__}: {err}") from err
    return _to_numpy(obj, torch)


def unwrap_checkpoint(obj, state_dict_key: Optional[str] = None
                      ) -> Tuple[Dict[str, np.ndarray], Optional[str], List[str]]:
    """``(state_dict, the entry it came from or None, the other entries)`` of a checkpoint.

    ``obj`` is the state dict itself (every value an array), or a dict holding it under
    ``state_dict_key`` or, without one, under one of :data:`STATE_DICT_KEYS`.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"the checkpoint holds a {type(obj).__name__}"
                              f"{' (empty)' if isinstance(obj, Mapping) else ''}, not a state "
                              "dict or a dict with one.")
    if state_dict_key is None and all(isinstance(v, np.ndarray) for v in obj.values()):
        return dict(obj), None, []
    if state_dict_key is not None:
        if state_dict_key not in obj:
            raise CheckpointError(f"the checkpoint has no entry {state_dict_key!r}; its entries: "
                                  f"{sorted(map(str, obj))}")
        key = state_dict_key
    else:
        found = [k for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)]
        if len(found) != 1:
            what = "several state dicts" if found else "no state dict"
            raise CheckpointError(
                f"the checkpoint has {what} ({' and '.join(found) or f'no {STATE_DICT_KEYS}'}); "
                f"its entries: {sorted(map(str, obj))}. Name the entry that holds the model "
                "(state_dict_key, --state_dict_key).")
        key = found[0]
    inner = obj[key]
    if not isinstance(inner, Mapping) or not inner:
        raise CheckpointError(f"the checkpoint's {key!r} entry is a {type(inner).__name__}, not a "
                              "state dict.")
    others = sorted(str(k) for k in obj if k != key)
    return dict(inner), key, others


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_state_dict(checkpoint, output, format: str = "auto", *,
                      state_dict_key: Optional[str] = None, key_prefix: Optional[str] = None,
                      branch: str = "adv", export: bool = True,
                      source: Optional[dict] = None) -> dict:
    """Writes the acl-tf models of a checkpoint already in memory into the new directory
    ``output`` (module docstring) and returns what ``imported.json`` records.

    Args:
        checkpoint: a state dict (key -> NumPy array) or a dict holding one
            (:func:`unwrap_checkpoint`).
        output: the directory to write; it must not exist or be empty.
        format: ``auto``, ``multi_bn``, ``single_bn`` or ``trades_wrn``
            (:mod:`acl_tf.models.convert`).
        state_dict_key: the checkpoint entry holding the state dict (default: found).
        key_prefix: import only the keys under this prefix (e.g. ``encoder_k.``).
        branch: the default BN branch of an imported classifier.
        export: also export an imported classifier as ``saved_model/1/``.
        source: what to record about the source file in ``imported.json``.

    Raises:
        CheckpointError: the checkpoint does not fit (a
            :class:`~acl_tf.models.convert.StateDictMismatch` lists every unknown or missing key
            and wrong shape) or cannot be read.
        RunDirError: ``output`` is a file or a directory that is not empty.
    """
    from acl_tf.models.convert import DATA_PARALLEL_PREFIX, convert_state_dict, select_prefix, \
        strip_prefix

    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RunDirError(f"{output} already exists and is not an empty directory; choose a new "
                          "output directory.")
    state_dict, entry, others = unwrap_checkpoint(checkpoint, state_dict_key)
    state_dict, stripped = strip_prefix(state_dict, DATA_PARALLEL_PREFIX)
    outside: List[str] = []
    if key_prefix:
        state_dict, outside = select_prefix(state_dict, key_prefix)
    converted = convert_state_dict(state_dict, format, branch=branch)

    summary = converted.summary()
    record = {"source": source or {"file": None},
              "state_dict_entry": entry, "entries_not_read": others,
              "module_prefix_removed": stripped, "key_prefix": key_prefix or None,
              "keys_outside_prefix": outside, **summary}
    logging.info("read %d keys as %s: %s", len(converted.imported), converted.format,
                 {k: summary[k] for k in ("arch", "dual_bn", "head", "num_classes")})
    logging.info("input normalisation: mean %s, std %s (%s)", converted.mean, converted.std,
                 converted.normalization)
    if converted.skipped:
        reasons = sorted(set(converted.skipped.values()))
        logging.info("not imported: %d key(s): %s", len(converted.skipped), "; ".join(reasons))
    if outside:
        logging.warning("not imported: %d key(s) outside key_prefix %r (e.g. %s)", len(outside),
                        key_prefix, outside[0])
    if others:
        logging.info("checkpoint entries besides the state dict, not read: %s", others)

    from acl_tf.tasks.fit import save_keras_atomic

    files = [rd.ENCODER]
    with rd.cleanup_on_failure():
        rd.make_dir(output)
        save_keras_atomic(converted.encoder, output / rd.ENCODER)
        if converted.head is not None:
            from acl_tf.trainers.pretrainer import ACLPretrainer

            pretrainer = ACLPretrainer(converted.encoder, converted.head,
                                       variant="ds" if converted.dual_bn else "s2s",
                                       name="pretrainer")
            pretrainer(np.zeros((1, 32, 32, 3), np.float32), training=False)
            save_keras_atomic(pretrainer, output / rd.PRETRAINER)
            files.append(rd.PRETRAINER)
        if converted.classifier is not None:
            kernel = np.asarray(converted.classifier.fc.kernel)
            bias = np.asarray(converted.classifier.fc.bias)
            if not kernel.any() and not bias.any():
                logging.warning("the checkpoint's fc is all zeros (what the reference's "
                                "cvt_state_dict puts in place of the head before fine-tuning): "
                                "%s is a classifier whose logits are all zero; fine-tune from "
                                "%s instead", rd.BEST, rd.ENCODER)
            save_keras_atomic(converted.classifier, output / rd.BEST)
            files.append(rd.BEST)
            if export:
                from acl_tf.serving.export import export_run

                path = export_run(converted.classifier, output, what="the imported classifier")
                files.append(str(Path(path).relative_to(output)))
        record.update(files=files, created=datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds"), acl_tf=_version())
        write_json_atomic(output / rd.IMPORTED, record)
    logging.info("wrote %s into %s", ", ".join(files + [rd.IMPORTED]), output)
    return record


def import_checkpoint(checkpoint, output, format: str = "auto", **kwargs) -> dict:
    """Reads the PyTorch checkpoint file ``checkpoint`` (:func:`load_torch_checkpoint`; PyTorch
    needed) and imports it into the new directory ``output`` (:func:`import_state_dict`, whose
    keyword arguments it takes). Returns what ``imported.json`` records."""
    path = Path(checkpoint)
    obj = load_torch_checkpoint(path)
    source = {"file": str(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}
    return import_state_dict(obj, output, format, source=source, **kwargs)


def _version() -> str:
    from acl_tf import __version__

    return __version__
