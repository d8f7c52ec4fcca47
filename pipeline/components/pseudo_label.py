"""``PseudoLabel``: soft pseudo-labels for every training image (semi-supervised mode).

TFX's BulkInferrer cannot run Keras 3 models, hence this component. It runs the first two steps
of :func:`acl_tf.tasks.semisup.run_semisup` (reference section 4): ``teacher``, standard
training from the pre-trained encoder (``normal`` BN) on the labelled subset of the ``train``
split, then ``pseudo_label``, the teacher's soft labels for every training image.

Reads ``examples`` (split ``train``) and ``pretrained_model`` (``encoder.keras``). Writes an
``InferenceResult`` artifact that is the library's output directory: ``pseudo_labels.npz``
(what the student reads), ``teacher/`` (its run directory, ``best.keras``), ``metrics.json``,
``config.json``. The pseudo-label accuracy over the training set (the paper's diagnostic, also
per labelled / unlabelled / validation subset) and the teacher's validation accuracy are
recorded on the artifact.
"""

import dataclasses
import os

from tfx import v1 as tfx

from acl_tf.core import run_dir as rd
from pipeline.components import artifact_io


def record_numbers(artifact, values: dict, keys=None) -> None:
    """Sets the numeric entries of ``values`` (those in ``keys``, if given) as float properties."""
    for key, value in values.items():
        if keys is not None and key not in keys:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            artifact.set_float_custom_property(key, float(value))


@tfx.dsl.components.component
def PseudoLabel(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    pretrained_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    pseudo_labels: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.InferenceResult],
    config_json: tfx.dsl.components.Parameter[str],
) -> None:
    """Trains the teacher on the labelled subset and pseudo-labels the training split.

    Args:
        examples: ``Examples`` with a ``train`` split.
        pretrained_model: the ``Pretrain`` run directory (``encoder.keras``).
        pseudo_labels: the output directory (``pseudo_labels.npz``, ``teacher/``).
        config_json: an :class:`acl_tf.configs.SemisupConfig` as JSON (``data.source`` and
            ``pretrained`` are replaced by the inputs).
    """
    from acl_tf.configs import SemisupConfig
    from acl_tf.tasks.semisup import run_semisup
    from pipeline.config import config_from_json

    config = config_from_json(SemisupConfig, config_json)
    with artifact_io.local_input(examples.uri) as examples_dir, \
            artifact_io.local_input(pretrained_model.uri) as pretrained_dir, \
            artifact_io.local_output(pseudo_labels.uri) as output_dir:
        artifact_io.check_split(examples, config.data.train_split)
        config = dataclasses.replace(artifact_io.with_examples(config, examples_dir),
                                     pretrained=os.path.join(pretrained_dir, rd.ENCODER))
        run_semisup(config, output_dir, step="teacher", verbose=2)
        summary = run_semisup(config, output_dir, step="pseudo_label", verbose=2)
    record_numbers(pseudo_labels, summary)
