"""``ServingPusher``: copies a blessed model's SavedModel to where TF Serving watches it.

Reads the ``AdversarialTrain`` ``Model`` artifact (its ``saved_model/<version>/``, written by
:func:`acl_tf.serving.export.export_classifier`) and the evaluator's ``ModelBlessing``. A blessed model
is copied to ``serving_dir/model_name/VERSION/`` (TF Serving's ``--model_base_path`` is
``serving_dir/model_name``; it serves the highest integer version), VERSION being one more than
the highest there. The copy is written under a temporary name and renamed (on object stores,
where directories cannot be renamed, ``saved_model.pb`` is copied last, as TFX's Pusher does),
so TF Serving never loads a partial model. A model whose SavedModel fingerprint equals that of
a version already there is not copied again: the push is idempotent.

Writes a ``PushedModel`` artifact holding ``push.json``, with TFX's Pusher custom properties
``pushed`` (1/0), ``pushed_destination`` and ``pushed_version``.
"""

import json
import os
import uuid
from typing import Optional

import tensorflow as tf
from absl import logging
from tfx import v1 as tfx

from acl_tf.core import run_dir as rd
from pipeline.components import artifact_io
from pipeline.components.adversarial_train import classifier_dir

PUSH_FILE = "push.json"
_FINGERPRINT = "fingerprint.pb"
_SAVED_MODEL_PB = "saved_model.pb"


def integer_versions(base: str) -> list[int]:
    """The integer-named version directories under ``base`` (sorted; [] if it does not exist)."""
    if not tf.io.gfile.isdir(base):
        return []
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(base)]
    return sorted(int(n) for n in names if n.isdigit() and tf.io.gfile.isdir(
        os.path.join(base, n)))


def find_saved_model(model_dir: str) -> str:
    """The newest ``saved_model/<version>/`` of a training run directory."""
    base = os.path.join(model_dir, rd.SAVED_MODEL)
    versions = integer_versions(base)
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no {rd.SAVED_MODEL}/<version>/ SavedModel "
                                "(acl_tf.serving.export.export_classifier writes it at the end of "
                                "training)")
    path = os.path.join(base, str(versions[-1]))
    if not tf.io.gfile.exists(os.path.join(path, _SAVED_MODEL_PB)):
        raise FileNotFoundError(f"{path} is not a SavedModel (no {_SAVED_MODEL_PB})")
    return path


def _fingerprint(saved_model: str) -> Optional[bytes]:
    path = os.path.join(saved_model, _FINGERPRINT)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def push_saved_model(saved_model: str, base: str) -> tuple[int, bool]:
    """Copies ``saved_model`` to ``base/<next version>/``; returns (version, copied).

    When a version already holds a SavedModel with the same fingerprint nothing is copied and
    that version is returned with ``copied=False``.
    """
    fingerprint = _fingerprint(saved_model)
    versions = integer_versions(base)
    if fingerprint is not None:
        for version in versions:
            if _fingerprint(os.path.join(base, str(version))) == fingerprint:
                return version, False
    version = versions[-1] + 1 if versions else 1
    target = os.path.join(base, str(version))
    tf.io.gfile.makedirs(base)
    if artifact_io.is_remote(base):
        # Object stores cannot rename directories: copy saved_model.pb last (what TF Serving
        # and TFX's Pusher take as "the model is complete").
        artifact_io.copy_tree(saved_model, target)
        tf.io.gfile.remove(os.path.join(target, _SAVED_MODEL_PB))
        tf.io.gfile.copy(os.path.join(saved_model, _SAVED_MODEL_PB),
                         os.path.join(target, _SAVED_MODEL_PB))
        return version, True
    tmp = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        artifact_io.copy_tree(saved_model, tmp)
        os.rename(tmp, target)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
    return version, True


def is_blessed(blessing) -> bool:
    """TFX's convention: the ``blessed`` custom property is 1."""
    return blessing.get_int_custom_property("blessed") == 1


@tfx.dsl.components.component
def ServingPusher(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.PushedModel],
    serving_dir: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str],
) -> None:
    """Pushes the model's SavedModel to ``serving_dir/model_name/VERSION/`` if it is blessed.

    Args:
        model: the ``AdversarialTrain`` run directory (``saved_model/<version>/``).
        model_blessing: the ``RobustEvaluator``'s blessing.
        pushed_model: receives ``push.json``.
        serving_dir: the serving root (local path or ``gs://...``).
        model_name: TF Serving's model name (a directory under ``serving_dir``).
    """
    base = os.path.join(serving_dir, model_name)
    if not is_blessed(model_blessing):
        record = {"pushed": False, "reason": "the model is not blessed",
                  "model": model.uri, "blessing": model_blessing.uri}
        pushed_model.set_int_custom_property("pushed", 0)
        logging.info("not pushing %s: it is not blessed", model.uri)
    else:
        saved_model = find_saved_model(classifier_dir(model))
        version, copied = push_saved_model(saved_model, base)
        destination = os.path.join(base, str(version))
        record = {"pushed": True, "copied": copied, "destination": destination,
                  "version": version, "model_name": model_name, "source": saved_model,
                  "model": model.uri}
        pushed_model.set_int_custom_property("pushed", 1)
        pushed_model.set_string_custom_property("pushed_destination", destination)
        pushed_model.set_string_custom_property("pushed_version", str(version))
        logging.info("%s %s as version %d of %s", "pushed" if copied else "already serving",
                     saved_model, version, base)
    with artifact_io.local_output(pushed_model.uri) as out:
        with open(os.path.join(out, PUSH_FILE), "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
