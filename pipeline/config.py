"""Typed configuration of the TFX pipeline.

A :class:`PipelineConfig` names, for every stage, a config of the library (a file under
``configs/<kind>/`` or a path) plus ``field=value`` overrides, exactly as the library's command
lines take them. Named pipeline configs are YAML files under ``configs/pipeline/``: ``smoke``
(every component, semi-supervised mode) and ``smoke_finetune`` on the shipped sample in a few
minutes; ``cifar10`` (fine-tuning) and ``cifar10_semisup`` (1% labels) with the paper's settings.

:meth:`PipelineConfig.resolve` turns the references into the library's dataclasses
(:class:`~acl_tf.configs.PretrainConfig`; :class:`~acl_tf.configs.FinetuneConfig` or, in
``semisup`` mode, :class:`~acl_tf.configs.SemisupConfig`; :class:`~acl_tf.configs.EvaluateConfig`),
validated at pipeline construction time, so that a bad value fails before anything runs. Their
``data.source`` is the placeholder :data:`EXAMPLES_SOURCE`: each component reads its images from
its input ``Examples`` artifact instead. The resolved configs travel to the components as JSON
parameters, which makes them part of TFX's cache key and of the compiled Vertex spec.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Optional

from acl_tf.configs import (
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    SemisupConfig,
    from_dict,
    load_config,
    to_dict,
)

__all__ = ["EXAMPLES_SOURCE", "MODES", "BlessingConfig", "PipelineConfig", "PipelineDataConfig",
           "ResolvedStages", "StageRef", "config_from_json", "config_to_json",
           "load_pipeline_config", "resolve_path"]

EXAMPLES_SOURCE = "<tfx Examples artifact>"
MODES = ("finetune", "semisup")
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


@dataclasses.dataclass
class PipelineDataConfig:
    """Where the images enter the pipeline.

    By default two ``ImportExampleGen`` read the TFRecord files of ``tf.train.Example`` (features
    ``image``, ``label``, optional ``id``; see :mod:`acl_tf.data`) matching ``train_pattern`` and
    ``test_pattern`` under ``input_base`` (relative paths are relative to the project root; use
    ``gs://...`` on Vertex AI). Train and test data enter separately so that a change of the
    test set re-evaluates without re-training. With ``tfds_name`` set, a TFDS dataset is
    materialised into the same format instead (``tfds_train_split`` / ``tfds_test_split``).
    """

    input_base: str = "../shared/data/cifar10"
    train_pattern: str = "train.tfrecord"
    test_pattern: str = "test.tfrecord"
    tfds_name: Optional[str] = None
    tfds_data_dir: Optional[str] = None
    tfds_train_split: str = "train"
    tfds_test_split: str = "test"
    image_size: int = 32
    num_classes: int = 10

    def __post_init__(self):
        if self.image_size < 1 or self.num_classes < 2:
            raise ConfigError(f"data.image_size must be >= 1 and data.num_classes >= 2, got "
                              f"{self.image_size}, {self.num_classes}.")


@dataclasses.dataclass
class StageRef:
    """A library config: a name under ``configs/<kind>/`` (or a file path) plus overrides."""

    config: str = "default"
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass
class BlessingConfig:
    """When the robust evaluator blesses a model.

    Blessed iff ``accuracies[metric] >= threshold`` and, when a previously blessed model exists,
    ``accuracies[metric] >= baseline accuracy + min_delta`` (both measured in the same run on
    the same images). ``metric`` is an evaluation name of the evaluate config (``clean``,
    ``pgdK``, ``autoattack``).
    """

    metric: str = "pgd20"
    threshold: float = 0.0
    min_delta: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"blessing.threshold must be in [0, 1], got {self.threshold}.")


@dataclasses.dataclass
class PipelineConfig:
    """The whole pipeline: data, the four stages, blessing and serving.

    ``mode``: ``finetune`` (adversarial fine-tuning of the pre-trained encoder, reference
    section 2) or ``semisup`` (pseudo-labels, then an adversarially trained student, section 4).
    """

    name: str = "acl-tf"
    mode: str = "finetune"
    data: PipelineDataConfig = dataclasses.field(default_factory=PipelineDataConfig)
    pretrain: StageRef = dataclasses.field(
        default_factory=lambda: StageRef("cifar10_resnet18"))
    finetune: StageRef = dataclasses.field(default_factory=lambda: StageRef("cifar10_paper"))
    semisup: StageRef = dataclasses.field(default_factory=lambda: StageRef("cifar10_paper"))
    evaluate: StageRef = dataclasses.field(default_factory=lambda: StageRef("default"))
    blessing: BlessingConfig = dataclasses.field(default_factory=BlessingConfig)
    serving_model_name: str = "acl_classifier"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if not self.name or any(c in self.name for c in " /"):
            raise ConfigError(f"name must be a non-empty pipeline name without spaces or "
                              f"slashes, got {self.name!r}.")
        if not self.serving_model_name or "/" in self.serving_model_name:
            raise ConfigError(f"serving_model_name must be a directory name, got "
                              f"{self.serving_model_name!r}.")

    def resolve(self) -> "ResolvedStages":
        """The stages' library configs, validated, with the pipeline's data settings."""
        return ResolvedStages.from_pipeline_config(self)


def _pipeline_data(config, data: PipelineDataConfig):
    """``config`` with ``data`` reading from the Examples artifact of the pipeline."""
    return dataclasses.replace(
        config, data=dataclasses.replace(
            config.data, source=EXAMPLES_SOURCE, train_split=TRAIN_SPLIT, test_split=TEST_SPLIT,
            data_dir=None, download=False, image_size=data.image_size,
            num_classes=data.num_classes))


def _load(cls, kind: str, ref: StageRef, where: str):
    try:
        return load_config(cls, kind, ref.config, ref.overrides)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


@dataclasses.dataclass
class ResolvedStages:
    """The library configs the components receive (``finetune`` is None in semisup mode and
    ``semisup`` None in finetune mode)."""

    pretrain: PretrainConfig
    finetune: Optional[FinetuneConfig]
    semisup: Optional[SemisupConfig]
    evaluate: EvaluateConfig

    @classmethod
    def from_pipeline_config(cls, config: PipelineConfig) -> "ResolvedStages":
        data = config.data
        pretrain = _pipeline_data(_load(PretrainConfig, "pretrain", config.pretrain, "pretrain"),
                                  data)
        finetune = semisup = None
        if config.mode == "finetune":
            finetune = _load(FinetuneConfig, "finetune", config.finetune, "finetune")
            # The encoder comes from the Pretrain component; the test split is the evaluator's.
            finetune = dataclasses.replace(_pipeline_data(finetune, data), pretrained=None,
                                           evaluate_test=False)
        else:
            semisup = _load(SemisupConfig, "semisup", config.semisup, "semisup")
            semisup = dataclasses.replace(_pipeline_data(semisup, data), pretrained=None,
                                          evaluate_test=False)
        evaluate = _pipeline_data(_load(EvaluateConfig, "evaluate", config.evaluate, "evaluate"),
                                  data)
        metrics = [name.strip().lower() for name in evaluate.attacks]
        if config.blessing.metric not in metrics:
            raise ConfigError(f"blessing.metric {config.blessing.metric!r} is not one of the "
                              f"evaluations run ({metrics}); add it to evaluate's attacks.")
        return cls(pretrain=pretrain, finetune=finetune, semisup=semisup, evaluate=evaluate)


def config_to_json(config) -> str:
    """A library config as canonical JSON (sorted keys: equal configs give equal cache keys)."""
    return json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))


def config_from_json(cls, text: str):
    """Inverse of :func:`config_to_json`."""
    try:
        values = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"Cannot parse the {cls.__name__} JSON parameter: {err}") from None
    return from_dict(cls, values)


def load_pipeline_config(name_or_path: str, overrides: Iterable[str] = ()) -> PipelineConfig:
    """``configs/pipeline/NAME.yaml`` (or a YAML/JSON path) with ``field.sub=value`` overrides.

    List-valued fields such as ``pretrain.overrides`` take a YAML list:
    ``--set='pretrain.overrides=[epochs=2, batch_size=32]'``.
    """
    return load_config(PipelineConfig, "pipeline", name_or_path, overrides)


def resolve_path(path: str, project_root: Path) -> str:
    """``path`` as an absolute path (relative ones against ``project_root``); URIs unchanged."""
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path(project_root) / p).resolve())
