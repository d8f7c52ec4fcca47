"""``AdversarialTrain``: the robust classifier, by fine-tuning or as a semi-supervised student.

* ``mode="finetune"``: :func:`acl_tf.tasks.finetune.run_finetuning` (AFF / ALF / SLF as the
  config says) of the pre-trained encoder on the labelled ``train`` split, with model selection
  on a held-out validation part of it.
* ``mode="semisup"``: the adversarially trained student of :mod:`acl_tf.tasks.semisup`,
  trained on the ``train`` split with the soft pseudo-labels of the ``PseudoLabel`` component.

Reads ``examples`` (split ``train``), ``pretrained_model`` (``encoder.keras``) and, in semisup
mode, ``pseudo_labels`` (``pseudo_labels.npz``). Writes a ``Model`` artifact holding the
library's run directory of the classifier (the artifact itself for fine-tuning, its ``student/``
subdirectory in semisup mode, as the custom property ``classifier_subdir`` says; see
:func:`classifier_dir`): ``best.keras`` (the selected classifier, what the evaluator loads),
``saved_model/<version>/`` (its SavedModel for TF Serving, what the pusher copies),
``metrics.json``, ``config.json``, ``history.json``, logs. The selected epoch and its
validation accuracies are recorded on the artifact.
"""

import dataclasses
import os

from tfx import v1 as tfx

from acl_tf.core import run_dir as rd
from pipeline.components import artifact_io

MODES = ("finetune", "semisup")
# Where the classifier run directory (best.keras, saved_model/) lies inside the Model artifact.
CLASSIFIER_SUBDIR = "classifier_subdir"


def classifier_dir(model, root=None) -> str:
    """The classifier's run directory in a ``Model`` artifact of this component (under ``root``,
    a local copy of the artifact, if given)."""
    subdir = model.get_string_custom_property(CLASSIFIER_SUBDIR)
    root = model.uri if root is None else root
    return os.path.join(root, subdir) if subdir else root


def record_selection(model, record: dict) -> None:
    """The selected epoch and its validation accuracies as custom properties."""
    best = record.get("best") or {}
    if "epoch" in best:
        model.set_int_custom_property("best_epoch", int(best["epoch"]))
    for key in ("val_acc", "val_adv_acc"):
        if isinstance(best.get(key), (int, float)):
            model.set_float_custom_property(key, float(best[key]))


def _finetune(config_json: str, examples_dir: str, encoder_file: str, model_dir: str):
    """Fine-tunes into ``model_dir``; returns (selection record, classifier subdirectory)."""
    from acl_tf.configs import FinetuneConfig
    from acl_tf.tasks.finetune import run_finetuning
    from pipeline.config import config_from_json

    config = artifact_io.with_examples(config_from_json(FinetuneConfig, config_json),
                                       examples_dir)
    _, record = run_finetuning(config, model_dir, pretrained=encoder_file, verbose=2)
    return record, ""


def _student(config_json: str, examples_dir: str, encoder_file: str, pseudo_labels_file: str,
             model_dir: str):
    """Trains the student into ``model_dir/student``; returns (its record, ``"student"``)."""
    from acl_tf.configs import SemisupConfig
    from acl_tf.tasks.selection import read_metrics
    from acl_tf.tasks.semisup import run_semisup
    from pipeline.config import config_from_json

    config = dataclasses.replace(
        artifact_io.with_examples(config_from_json(SemisupConfig, config_json), examples_dir),
        pretrained=encoder_file)
    run_semisup(config, model_dir, step="student", pseudo_labels=pseudo_labels_file, verbose=2)
    return read_metrics(os.path.join(model_dir, rd.STUDENT)), rd.STUDENT


@tfx.dsl.components.component
def AdversarialTrain(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    pretrained_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    mode: tfx.dsl.components.Parameter[str],
    config_json: tfx.dsl.components.Parameter[str],
    pseudo_labels: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.InferenceResult] = None,
) -> None:
    """Adversarially trains the classifier that the evaluator and the pusher receive.

    Args:
        examples: ``Examples`` with a ``train`` split.
        pretrained_model: the ``Pretrain`` run directory (``encoder.keras``).
        model: the training run directory (``best.keras``, ``saved_model/<version>/``).
        mode: ``finetune`` or ``semisup``.
        config_json: a :class:`acl_tf.configs.FinetuneConfig` (finetune) or
            :class:`acl_tf.configs.SemisupConfig` (semisup) as JSON (``data.source`` and the
            pre-trained encoder are replaced by the inputs).
        pseudo_labels: ``PseudoLabel``'s output (semisup only).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if mode == "semisup" and pseudo_labels is None:
        raise ValueError("mode 'semisup' needs the pseudo_labels input (the PseudoLabel "
                         "component's output).")
    with artifact_io.local_input(examples.uri) as examples_dir, \
            artifact_io.local_input(pretrained_model.uri) as pretrained_dir, \
            artifact_io.local_output(model.uri) as model_dir:
        artifact_io.check_split(examples, artifact_io.TRAIN_SPLIT)
        encoder_file = os.path.join(pretrained_dir, rd.ENCODER)
        if mode == "finetune":
            record, subdir = _finetune(config_json, examples_dir, encoder_file, model_dir)
        else:
            with artifact_io.local_input(pseudo_labels.uri) as labels_dir:
                record, subdir = _student(config_json, examples_dir, encoder_file,
                                          os.path.join(labels_dir, rd.PSEUDO_LABELS),
                                          model_dir)
    model.set_string_custom_property(CLASSIFIER_SUBDIR, subdir)
    model.set_string_custom_property("stage", mode)
    model.set_string_custom_property("pretrained_model", pretrained_model.uri)
    record_selection(model, record)
