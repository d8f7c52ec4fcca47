"""``Pretrain``: ACL pre-training (the variant comes from the config) on the training split.

Reads the ``train`` split of an ``Examples`` artifact; writes a ``Model`` artifact that is the
run directory of :func:`acl_tf.tasks.pretrain.run_pretraining`: ``encoder.keras`` (the encoder
with both BN branches, what the next stages load), ``pretrainer.keras``, ``config.json``,
``history.json``, checkpoints and TensorBoard logs. The variant, width and the last epoch's
training figures are recorded on the artifact (visible in ML Metadata).
"""

from tfx import v1 as tfx

from pipeline.components import artifact_io


def record_history(artifact, history, prefix: str = "train_") -> None:
    """Sets the last epoch's numeric figures of a training history as float custom properties."""
    if not history:
        return
    for key, value in history[-1].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            artifact.set_float_custom_property(f"{prefix}{key}", float(value))


@tfx.dsl.components.component
def Pretrain(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    config_json: tfx.dsl.components.Parameter[str],
) -> None:
    """Pre-trains an encoder with ACL.

    Args:
        examples: ``Examples`` with a ``train`` split of image/label ``tf.train.Example``.
        model: the pre-training run directory (``encoder.keras`` with both BN branches).
        config_json: a :class:`acl_tf.configs.PretrainConfig` as JSON (its ``data.source`` is
            replaced by ``examples``).
    """
    from acl_tf.configs import PretrainConfig
    from acl_tf.tasks.pretrain import run_pretraining
    from pipeline.config import config_from_json

    config = config_from_json(PretrainConfig, config_json)
    with artifact_io.local_input(examples.uri) as examples_dir, \
            artifact_io.local_output(model.uri) as model_dir:
        artifact_io.check_split(examples, config.data.train_split)
        _, history = run_pretraining(artifact_io.with_examples(config, examples_dir), model_dir,
                                     verbose=2)
    model.set_string_custom_property("stage", "pretrain")
    model.set_string_custom_property("variant", config.variant)
    model.set_string_custom_property("method", config.method)
    model.set_string_custom_property("arch", config.model.arch)
    model.set_int_custom_property("width", config.model.width)
    model.set_int_custom_property("dual_bn", int(config.dual_bn))
    model.set_int_custom_property("epochs", config.epochs)
    record_history(model, history)
