"""Typed configuration of the TFX pipeline.

A :class:`PipelineConfig` names, for every stage, a config of the library (a preset of
``acl_tf/configs/presets/<kind>/`` or a path) plus ``field=value`` overrides, exactly as the
library's command lines take them. Named pipeline configs are the presets under
``acl_tf/configs/presets/pipeline/``: ``smoke`` (every component, semi-supervised mode) and
``smoke_finetune`` on the shipped sample in a few minutes; ``cifar10`` (fine-tuning) and
``cifar10_semisup`` (1% labels) with the paper's settings.

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
import re
from pathlib import Path
from typing import Iterable, Optional, Union

import acl_tf
from acl_tf.configs import (
    ConfigBase,
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    NonNegativeInt,
    PositiveFloat,
    PretrainConfig,
    SemisupConfig,
    from_dict,
    load_config,
    to_dict,
)
from acl_tf.core.paths import SAMPLE_PREFIX, expand_sample

__all__ = ["ACCELERATOR_TYPES", "EXAMPLES_SOURCE", "MODES", "RESOURCE_COMPONENTS", "BlessingConfig",
           "ComputeResources", "PipelineConfig", "PipelineDataConfig", "ResolvedStages",
           "ResourcesConfig", "StageRef", "config_from_json", "config_to_json",
           "load_pipeline_config", "memory_gb", "resolve_path"]

EXAMPLES_SOURCE = "<tfx Examples artifact>"
PACKAGE_PARENT = Path(acl_tf.__file__).resolve().parents[1]
MODES = ("finetune", "semisup")
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


@dataclasses.dataclass
class PipelineDataConfig:
    """Where the images enter the pipeline.

    With ``input_base`` set, two ``ImportExampleGen`` read the TFRecord files of
    ``tf.train.Example`` (features ``image``, ``label``, optional ``id``; see :mod:`acl_tf.data`)
    matching ``train_pattern`` and ``test_pattern`` under it: ``sample:cifar10`` (the sample
    shipped with acl-tf), ``gs://...`` on Vertex AI, or a path (relative paths are relative to
    the project root, which is ``/app`` in the container image). Train and test data enter
    separately so that a change of the test set re-evaluates without re-training. Otherwise the
    TFDS dataset ``tfds_name`` (by default ``cifar10``, like the library's) is materialised into
    the same format (``tfds_train_split`` / ``tfds_test_split``).
    """

    input_base: str = ""
    train_pattern: str = "train.tfrecord"
    test_pattern: str = "test.tfrecord"
    tfds_name: Optional[str] = "cifar10"
    tfds_data_dir: Optional[str] = None
    tfds_train_split: str = "train"
    tfds_test_split: str = "test"
    image_size: int = 32
    num_classes: int = 10

    def __post_init__(self):
        if not self.input_base and not self.tfds_name:
            raise ConfigError("data: the pipeline reads TFRecords under data.input_base or the "
                              "TFDS dataset data.tfds_name (e.g. cifar10); set one of them.")
        if self.image_size < 1 or self.num_classes < 2:
            raise ConfigError(f"data.image_size must be >= 1 and data.num_classes >= 2, got "
                              f"{self.image_size}, {self.num_classes}.")


@dataclasses.dataclass
class StageRef:
    """A library config: a preset name (``acl_tf/configs/presets/<kind>/``) or a file path, plus
    overrides."""

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


# Accelerators a heavy component may request (``resources.accelerator_type``). Vertex AI Pipelines
# runs each step as a CustomJob and takes the names of Vertex's ``AcceleratorType`` enum: the
# NVIDIA GPUs that the image's CUDA 12.3 build of TensorFlow 2.16 runs on (K80 is Kepler, which
# CUDA 12 dropped; Blackwell GPUs need a newer CUDA; TPUs need another image). Kubeflow Pipelines
# 2.x uses the type as the Kubernetes resource name of the container's limit: ``nvidia.com/gpu``.
VERTEX_ACCELERATORS = ("NVIDIA_TESLA_P4", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_V100",
                       "NVIDIA_TESLA_T4", "NVIDIA_L4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB",
                       "NVIDIA_H100_80GB", "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB")
KUBERNETES_ACCELERATORS = ("nvidia.com/gpu",)
ACCELERATOR_TYPES = VERTEX_ACCELERATORS + KUBERNETES_ACCELERATORS
# resources.<key> -> the component it sizes (the heavy ones; the example gens and the pusher run
# on the engine's default machine).
RESOURCE_COMPONENTS = {"pretrain": "Pretrain", "pseudo_label": "PseudoLabel",
                       "adversarial_train": "AdversarialTrain", "evaluate": "RobustEvaluator"}
_MEMORY_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(" + "|".join(_MEMORY_UNITS) + r")\s*$")


def memory_gb(value) -> float:
    """A memory size in GB (10**9 bytes, the unit of the KFP spec's ``memoryLimit``): a number is
    GB already; a string is a number with a Kubernetes unit (``"16G"``, ``"15Gi"``, ``"512M"``)."""
    if not isinstance(value, str):
        return float(value)
    match = _MEMORY.match(value)
    if match is None:
        raise ConfigError(f"memory_limit must be a number of GB or a size with a unit "
                          f"({', '.join(_MEMORY_UNITS)}) such as '16G' or '15Gi', got {value!r}.")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)] / 1e9


@dataclasses.dataclass
class ComputeResources(ConfigBase):
    """What one component's container asks the engine for; None: not asked (engine default).

    ``accelerator_type``: one of :data:`ACCELERATOR_TYPES` (case-insensitive for the Vertex
    names). ``accelerator_count``: how many (default 1 when a type is set; 0: none).
    ``cpu_limit``: vCPUs. ``memory_limit``: GB, or a size with a unit (``"32G"``, ``"30Gi"``).
    """

    accelerator_type: Optional[str] = None
    accelerator_count: Optional[NonNegativeInt] = None
    cpu_limit: Optional[PositiveFloat] = None
    memory_limit: Optional[Union[PositiveFloat, str]] = None

    def validate(self) -> None:
        if self.accelerator_type is not None:
            name = self.accelerator_type.strip()
            known = {n.lower(): n for n in ACCELERATOR_TYPES}
            if name.lower() not in known:
                raise ConfigError(
                    f"accelerator_type {self.accelerator_type!r} is not an accelerator this "
                    f"image can use; expected one of {VERTEX_ACCELERATORS} (Vertex AI) or "
                    f"{KUBERNETES_ACCELERATORS[0]!r} (Kubeflow Pipelines), or null for none.")
            object.__setattr__(self, "accelerator_type", known[name.lower()])
        if self.memory_limit is not None and memory_gb(self.memory_limit) <= 0:
            raise ConfigError(f"memory_limit must be > 0, got {self.memory_limit!r}.")

    @property
    def accelerators(self) -> int:
        """The number of accelerators asked for (0 without a type)."""
        if not self.accelerator_type:
            return 0
        return 1 if self.accelerator_count is None else self.accelerator_count

    @property
    def memory_limit_gb(self) -> Optional[float]:
        return None if self.memory_limit is None else memory_gb(self.memory_limit)

    def is_empty(self) -> bool:
        return not self.accelerators and self.cpu_limit is None and self.memory_limit is None


@dataclasses.dataclass
class ResourcesConfig(ComputeResources):
    """Compute resources of the heavy components on Vertex AI / Kubeflow Pipelines (the local
    runner ignores them). The top-level fields apply to all four; a component's section
    (``pretrain``, ``pseudo_label``, ``adversarial_train``, ``evaluate``) overrides the fields it
    sets (null: inherit; ``accelerator_count: 0`` runs that component without accelerator).
    Default: nothing asked, every component on the engine's default machine (no GPU).
    """

    pretrain: ComputeResources = dataclasses.field(default_factory=ComputeResources)
    pseudo_label: ComputeResources = dataclasses.field(default_factory=ComputeResources)
    adversarial_train: ComputeResources = dataclasses.field(default_factory=ComputeResources)
    evaluate: ComputeResources = dataclasses.field(default_factory=ComputeResources)

    def validate(self) -> None:
        super().validate()
        if self.accelerator_count and not self.accelerator_type:
            raise ConfigError(f"resources.accelerator_count is {self.accelerator_count} but "
                              f"resources.accelerator_type is not set; name the accelerator "
                              f"(e.g. NVIDIA_L4) or remove the count.")
        for key in RESOURCE_COMPONENTS:
            section = getattr(self, key)
            if section.accelerator_count and not (section.accelerator_type
                                                  or self.accelerator_type):
                raise ConfigError(f"resources.{key}.accelerator_count is "
                                  f"{section.accelerator_count} but no accelerator_type is set "
                                  f"(in resources.{key} or resources); name the accelerator "
                                  f"(e.g. NVIDIA_L4) or remove the count.")

    def for_component(self, key: str) -> ComputeResources:
        """The resources of ``key`` (a key of :data:`RESOURCE_COMPONENTS`): its section's fields,
        the top-level ones where it sets none."""
        section = getattr(self, key)
        return ComputeResources(**{
            f.name: getattr(section, f.name) if getattr(section, f.name) is not None
            else getattr(self, f.name) for f in dataclasses.fields(ComputeResources)})


@dataclasses.dataclass
class PipelineConfig:
    """The whole pipeline: data, the four stages, blessing, serving and compute resources.

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
    resources: ResourcesConfig = dataclasses.field(default_factory=ResourcesConfig)

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
    """A pipeline preset (``acl_tf/configs/presets/pipeline/NAME.yaml``) or a YAML/JSON path,
    with ``field.sub=value`` overrides.

    List-valued fields such as ``pretrain.overrides`` take a YAML list:
    ``--set='pretrain.overrides=[epochs=2, batch_size=32]'``.
    """
    return load_config(PipelineConfig, "pipeline", name_or_path, overrides)


def resolve_path(path: str, project_root: Path) -> str:
    """``path`` as an absolute path (relative ones against ``project_root``); URIs unchanged;
    ``sample:NAME`` is the shipped sample inside the project at ``project_root``."""
    if "://" in path:
        return path
    if path.startswith(SAMPLE_PREFIX):
        return str(Path(project_root) / Path(expand_sample(path)).relative_to(PACKAGE_PARENT))
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path(project_root) / p).resolve())
