"""Typed, named experiment configs.

A config is a (nested) dataclass. Named configs are YAML files under ``configs/<kind>/NAME.yaml``
at the project root holding only the fields that differ from the dataclass defaults; a command
line applies ``key.sub=value`` overrides on top, and the resolved config is written into the run
directory as ``config.json``. Unknown fields and values of the wrong type are errors that name
the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from acl_tf.core.errors import ConfigError  # noqa: F401 (re-exported)
from acl_tf.core.io import write_json_atomic

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"



def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp, where: str):
    """Converts ``value`` to the annotated type ``tp`` or raises ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"Config field {where!r} must be a mapping, got {value!r}.")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config field {where!r} must be a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"Config field {where!r} needs {len(args)} values, got {value!r}.")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"Config field {where!r} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"Config field {where!r} must be an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"Config field {where!r} must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"Config field {where!r} must be a string, got {value!r}.")
    return value


def from_dict(cls, values: dict, prefix: str = ""):
    """Builds dataclass ``cls`` from a (partial) dict; missing fields keep their defaults."""
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(f"Unknown config field(s) {[prefix + u for u in unknown]}; "
                          f"valid fields of {prefix or cls.__name__ + ' '}are {sorted(types_)}.")
    kwargs = {}
    for name, value in values.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            default = getattr(cls(), name) if _has_defaults(cls) else None
            base = to_dict(default) if default is not None else {}
            value = {**base, **value}
        kwargs[name] = _coerce(value, tp, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"Invalid {prefix.rstrip('.') or cls.__name__}: {err}") from err


def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def to_dict(config) -> dict:
    """The config as plain JSON-able Python (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.learning_rate=0.5"`` -> (["optim", "learning_rate"], 0.5) (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like field.subfield=value.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override {text!r} has no field name.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"Override {text!r}: cannot parse value: {err}") from err
    return key.split("."), value


def apply_overrides(values: dict, overrides: Iterable[str]) -> dict:
    """Returns a copy of the nested dict ``values`` with each ``a.b=value`` override applied."""
    values = json.loads(json.dumps(values))
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {text!r}: {part!r} is not a section.")
        node[path[-1]] = value
    return values


def config_path(kind: str, name_or_path: str) -> Path:
    """Resolves a config name (``configs/<kind>/NAME.yaml``) or an explicit file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in name_or_path:
        if not path.is_file():
            raise ConfigError(f"Config file {name_or_path!r} does not exist.")
        return path
    path = CONFIG_ROOT / kind / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"Unknown {kind} config {name_or_path!r}; available: "
                          f"{available_configs(kind)}.")
    return path


def available_configs(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


def load_config(cls, kind: str, name_or_path: Optional[str] = None,
                overrides: Iterable[str] = ()):
    """Defaults of ``cls`` <- named config or file <- overrides, validated."""
    values: dict = {}
    if name_or_path:
        path = config_path(kind, name_or_path)
        try:
            with open(path) as f:
                values = (json.load(f) if path.suffix == ".json" else yaml.safe_load(f)) or {}
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"Cannot read config {str(path)!r}: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"Config {str(path)!r} must hold a mapping of fields.")
    return from_dict(cls, apply_overrides(values, overrides))


def write_config(config, path) -> None:
    """Writes the resolved config as JSON, atomically."""
    write_json_atomic(path, to_dict(config), indent=2, sort_keys=True)


def read_config(cls, path):
    """Reads a ``config.json`` written by :func:`write_config`."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read config {str(path)!r}: {err}") from err
    return from_dict(cls, values)


# -- Sections shared by the experiments ---------------------------------------------------------
# (Imported late so that ``acl_tf.configs`` stays importable without TensorFlow work at import.)
from acl_tf.attacks import PGDConfig  # noqa: E402
from acl_tf.data.augment import AugmentConfig  # noqa: E402

BN_MODES = ("auto", "dual", "single")
OPTIMIZERS = ("lars", "sgd", "adam")
SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass
class DataConfig:
    """Where images come from (see :func:`acl_tf.data.load`)."""

    source: str = "../shared/data/cifar10"   # TFDS name, TFRecord file/dir/glob
    train_split: str = "train"
    test_split: str = "test"
    data_dir: Optional[str] = None            # TFDS data_dir
    download: bool = False                    # TFDS download switch
    image_size: int = 32
    num_classes: int = 10
    limit: Optional[int] = None               # use the first N training images

    def __post_init__(self):
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"data.limit must be positive or null, got {self.limit}.")


@dataclasses.dataclass
class ModelConfig:
    """Encoder and projection head."""

    arch: str = "resnet18"       # resnet18 | wrn34_10
    width: int = 64              # ResNet-18 first-stage channels
    bn: str = "auto"             # auto (dual for a2s/ds, single for s2s/a2a) | dual | single
    head_layers: int = 3
    head_dim: int = 512
    sync_bn: bool = False        # all-reduce BN batch statistics across replicas (tf.distribute)

    def __post_init__(self):
        if self.bn not in BN_MODES:
            raise ConfigError(f"model.bn must be one of {BN_MODES}, got {self.bn!r}.")


@dataclasses.dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule (per-step warm-up + cosine by default)."""

    name: str = "lars"                 # lars | sgd | adam
    learning_rate: float = 5.0         # at reference_batch_size
    reference_batch_size: int = 512    # lr scales linearly with batch size; 0 = no scaling
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coefficient: float = 0.001   # LARS eta
    schedule: str = "cosine"           # cosine | constant
    warmup_epochs: int = 10
    final_learning_rate: float = 1e-6

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name must be one of {OPTIMIZERS}, got {self.name!r}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule must be one of {SCHEDULES}, "
                              f"got {self.schedule!r}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"optimizer.learning_rate must be positive, got {self.learning_rate}.")

    def peak_learning_rate(self, batch_size: int) -> float:
        if not self.reference_batch_size:
            return self.learning_rate
        return self.learning_rate * batch_size / self.reference_batch_size


@dataclasses.dataclass
class PretrainConfig:
    """ACL pre-training (reference section 1). Defaults are the paper's settings."""

    variant: str = "ds"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=5))
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    batch_size: int = 512
    epochs: int = 1000
    temperature: float = 0.5
    ds_alpha: float = 1.0
    ds_average: bool = False           # the official code halves the DS sum
    seed: int = 0
    log_every_steps: int = 50
    keep_checkpoints: int = 3

    def __post_init__(self):
        from acl_tf.trainers.pretrainer import check_variant

        try:
            self.variant = check_variant(self.variant)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.batch_size < 2 or self.epochs < 1:
            raise ConfigError(f"batch_size must be >= 2 and epochs >= 1, got "
                              f"{self.batch_size}, {self.epochs}.")

    @property
    def dual_bn(self) -> bool:
        if self.model.bn == "auto":
            return self.variant in ("a2s", "ds")
        return self.model.bn == "dual"


SELECT_BY = ("robust", "clean")


@dataclasses.dataclass
class FinetuneOptimizerConfig:
    """SGD with momentum and coupled L2 (``torch.optim.SGD``), piecewise-constant per epoch."""

    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4           # coupled L2, as torch.optim.SGD(weight_decay=...)
    nesterov: bool = False
    decay_epochs: tuple[int, ...] = (15, 20)   # the rate drops after these many epochs
    decay_factor: float = 0.1

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ConfigError(f"optimizer.learning_rate must be positive, got {self.learning_rate}.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(f"optimizer.momentum and optimizer.weight_decay must be >= 0, got "
                              f"{self.momentum}, {self.weight_decay}.")
        epochs = list(self.decay_epochs)
        if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
            raise ConfigError(f"optimizer.decay_epochs must be strictly increasing positive "
                              f"epoch counts, got {list(self.decay_epochs)}.")
        if not 0 < self.decay_factor <= 1:
            raise ConfigError(f"optimizer.decay_factor must be in (0, 1], got {self.decay_factor}.")


@dataclasses.dataclass
class FinetuneConfig:
    """Supervised fine-tuning (reference section 2): AFF (TRADES), ALF or SLF.

    ``model`` describes the randomly initialised encoder used without ``pretrained``; with a
    pre-trained encoder its ``arch``/``width``/``bn`` are set from the saved encoder.
    ``attack`` is the TRADES attack of AFF (start x + 0.001 N(0, 1)), ``alf_attack`` the PGD of
    ALF (uniform start), ``eval_attack`` the PGD-20 of model selection on the validation split.
    ``select_by``: keep as ``best.keras`` the epoch of highest robust (or clean) validation
    accuracy.
    """

    mode: str = "aff"                     # aff | alf | slf
    bn: str = "adv"                       # BN branch fine-tuned and evaluated: adv | normal
    pretrained: Optional[str] = None      # pre-training run dir (or .keras file); None = RI
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    attack: PGDConfig = dataclasses.field(
        default_factory=lambda: PGDConfig(steps=10, random_start="normal"))
    alf_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=10))
    eval_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    trades_beta: float = 6.0
    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=FinetuneOptimizerConfig)
    batch_size: int = 128
    eval_batch_size: int = 256
    epochs: int = 25
    val_size: int = 5000                  # class-balanced hold-out of the training split
    augment: bool = True                  # RandomCrop(32, padding=4) + horizontal flip
    drop_remainder: bool = False          # PyTorch's DataLoader keeps the last partial batch
    select_by: str = "robust"             # robust | clean
    evaluate_test: bool = True            # clean + eval_attack accuracy of best.keras on test
    test_limit: Optional[int] = None      # test on N images, N/classes per class (null: all)
    export: bool = True                   # export best.keras to model_dir/saved_model/<version>
    seed: int = 0
    log_every_steps: int = 50
    keep_checkpoints: int = 3

    def __post_init__(self):
        from acl_tf.models import check_branch
        from acl_tf.trainers.finetuner import check_mode

        try:
            self.mode = check_mode(self.mode)
            self.bn = check_branch(str(self.bn).lower())
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.select_by not in SELECT_BY:
            raise ConfigError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}.")
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.epochs < 1:
            raise ConfigError(f"batch_size, eval_batch_size and epochs must be >= 1, got "
                              f"{self.batch_size}, {self.eval_batch_size}, {self.epochs}.")
        if self.val_size < 1 or self.val_size % self.data.num_classes:
            raise ConfigError(f"val_size must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes}, got {self.val_size}.")
        if self.trades_beta < 0:
            raise ConfigError(f"trades_beta must be >= 0, got {self.trades_beta}.")
        if self.test_limit is not None and (self.test_limit < 1
                                            or self.test_limit % self.data.num_classes):
            raise ConfigError(f"test_limit must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes} (a class-balanced subset) or null, got "
                              f"{self.test_limit}.")

    @property
    def freeze_encoder(self) -> bool:
        return self.mode != "aff"


# -- Robustness evaluation (acl_tf.evaluate) -----------------------------------------------------
from acl_tf.evaluation.autoattack import AutoAttackConfig  # noqa: E402
from acl_tf.evaluation.corruptions import Cifar10CConfig  # noqa: E402
from acl_tf.evaluation.guards import GuardConfig  # noqa: E402


@dataclasses.dataclass
class EvaluateConfig:
    """Robustness evaluation of a classifier (reference section 3). Defaults: the paper's TA and
    PGD-20 RA (eps 8/255, step 2/255, uniform start) plus the standard AutoAttack schedule.

    ``data.source`` / ``data.test_split`` / ``data.limit`` pick the evaluated images (``limit``:
    the first N of that split). ``attacks``: ``clean``, ``pgdK`` (K steps of ``attack``),
    ``autoattack``, ``corruptions`` (CIFAR-10-C). ``bn``: ``adv`` | ``normal`` | null (the
    classifier's own default branch). ``eps_sweep_255``: epsilons (in 1/255) of the
    accuracy-vs-epsilon curve, PGD with ``sweep_steps`` steps of ``sweep_step_ratio * eps``;
    empty disables it.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    attacks: tuple[str, ...] = ("clean", "pgd20", "autoattack")
    bn: Optional[str] = None
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    restarts: int = 1
    autoattack: AutoAttackConfig = dataclasses.field(default_factory=AutoAttackConfig)
    eps_sweep_255: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    sweep_steps: int = 20
    sweep_step_ratio: float = 0.25
    guards: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    cifar10c: Cifar10CConfig = dataclasses.field(default_factory=Cifar10CConfig)
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        from acl_tf.evaluation.run import parse_attack_name
        from acl_tf.models import check_branch

        try:
            for name in self.attacks:
                parse_attack_name(name)
            if self.bn is not None:
                self.bn = check_branch(str(self.bn).lower())
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if not self.attacks:
            raise ConfigError("attacks must name at least one evaluation.")
        if self.restarts < 1 or self.batch_size < 1 or self.sweep_steps < 1:
            raise ConfigError(f"restarts, batch_size and sweep_steps must be >= 1, got "
                              f"{self.restarts}, {self.batch_size}, {self.sweep_steps}.")
        if any(e < 0 for e in self.eps_sweep_255) or self.sweep_step_ratio <= 0:
            raise ConfigError(f"eps_sweep_255 must be >= 0 and sweep_step_ratio > 0, got "
                              f"{list(self.eps_sweep_255)}, {self.sweep_step_ratio}.")


# -- Semi-supervised adversarial training (acl_tf.semisup) ---------------------------------------
@dataclasses.dataclass
class SemisupTeacherConfig:
    """Step ii: standard (non-adversarial) training of the whole classifier on the labelled subset
    only, from the pre-trained encoder with its ``normal`` BN. Defaults: the authors' README
    (``train_trades.py --trainmode normal``: SGD 0.1, weight decay 2e-4, 100 epochs decayed x0.1
    after 40 and 60, batch 128). The epoch of highest clean validation accuracy is kept."""

    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.1, weight_decay=2e-4, decay_epochs=(40, 60)))
    batch_size: int = 128
    epochs: int = 100
    augment: bool = True                  # RandomCrop(32, padding=4) + horizontal flip

    def __post_init__(self):
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError(f"teacher.batch_size and teacher.epochs must be >= 1, got "
                              f"{self.batch_size}, {self.epochs}.")


@dataclasses.dataclass
class SemisupStudentConfig:
    """Step iii: adversarial training on every training image from the pre-trained encoder with
    its ``adv`` BN, loss l_s of reference section 4 (alpha, beta; the temperature is
    :attr:`SemisupConfig.temperature`). ``attack``: PGD-10 on the cross-entropy of the label
    (labelled images) or the pseudo-label (unlabelled ones), uniform start. ``batch_size`` images
    per step, labelled and unlabelled in proportion to the label rate (at least one labelled).
    ``alpha_convention``: ``paper`` weighs the labelled CE by alpha and its distillation term by
    1 - alpha (Eqn. 3); ``code`` swaps them, as the official script does (equal at alpha 0.5).
    ``distill_weight`` multiplies both distillation terms (the script's ``rate_distill``).
    Defaults: the official script (weight decay 5e-4, 15 epochs decayed x0.1 after 5 and 10)."""

    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.1, weight_decay=5e-4, decay_epochs=(5, 10)))
    batch_size: int = 128
    epochs: int = 15
    alpha: float = 0.5
    beta: float = 6.0
    distill_weight: float = 1.0
    alpha_convention: str = "paper"
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=10))
    augment: bool = True
    select_by: str = "robust"             # robust | clean validation accuracy -> best.keras

    def __post_init__(self):
        from acl_tf.losses import ALPHA_CONVENTIONS

        if self.batch_size < 2 or self.epochs < 1:
            raise ConfigError(f"student.batch_size must be >= 2 (labelled + unlabelled) and "
                              f"student.epochs >= 1, got {self.batch_size}, {self.epochs}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"student.alpha must be in [0, 1], got {self.alpha}.")
        if self.beta < 0 or self.distill_weight < 0:
            raise ConfigError(f"student.beta and student.distill_weight must be >= 0, got "
                              f"{self.beta}, {self.distill_weight}.")
        if self.alpha_convention not in ALPHA_CONVENTIONS:
            raise ConfigError(f"student.alpha_convention must be one of {ALPHA_CONVENTIONS}, "
                              f"got {self.alpha_convention!r}.")
        if self.select_by not in SELECT_BY:
            raise ConfigError(f"student.select_by must be one of {SELECT_BY}, "
                              f"got {self.select_by!r}.")


@dataclasses.dataclass
class SemisupConfig:
    """Semi-supervised adversarial training from few labels (reference section 4, Table 2).

    The training split loses a class-balanced validation hold-out of ``val_size`` images; of the
    rest, a class-balanced labelled subset is drawn: ``labels_per_class`` images per class, or
    ``label_fraction`` of the rest (rounded to a whole number of images per class); exactly one
    of the two is set. The other images are unlabelled. ``temperature`` is T of the soft
    pseudo-labels and of the distillation terms. ``pretrained``: a pre-training run directory
    (or ``.keras`` encoder); None is the "vanilla UAT++" baseline (random initialisation), whose
    architecture ``model`` describes. ``eval_attack``: PGD-20 of student model selection and
    testing.
    """

    pretrained: Optional[str] = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    label_fraction: Optional[float] = 0.01
    labels_per_class: Optional[int] = None
    val_size: int = 5000
    temperature: float = 1.0
    teacher: SemisupTeacherConfig = dataclasses.field(default_factory=SemisupTeacherConfig)
    student: SemisupStudentConfig = dataclasses.field(default_factory=SemisupStudentConfig)
    eval_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    eval_batch_size: int = 256
    evaluate_test: bool = True
    seed: int = 0
    log_every_steps: int = 50
    keep_checkpoints: int = 3

    def __post_init__(self):
        if (self.label_fraction is None) == (self.labels_per_class is None):
            raise ConfigError(f"Set exactly one of label_fraction and labels_per_class (the other "
                              f"null), got label_fraction={self.label_fraction}, "
                              f"labels_per_class={self.labels_per_class}.")
        if self.label_fraction is not None and not 0.0 < self.label_fraction < 1.0:
            raise ConfigError(f"label_fraction must be in (0, 1), got {self.label_fraction}.")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ConfigError(f"labels_per_class must be >= 1, got {self.labels_per_class}.")
        if self.val_size < 1 or self.val_size % self.data.num_classes:
            raise ConfigError(f"val_size must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes}, got {self.val_size}.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}.")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}.")


BENCH_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class BenchConfig:
    """Throughput benchmark of the pre-training step (``python -m acl_tf.bench``).

    Every variant's step is the one of the pre-training config ``pretrain`` (a name under
    ``configs/pretrain/`` or a path) with ``model.width``/``batch_size`` replaced by ``width`` /
    ``batch_size`` and ``overrides`` (``field.sub=value``) applied. ``warmup_steps`` untimed steps
    follow the first (tracing) call; ``steps`` timed steps give the median. The input pipeline
    decodes ``pipeline_source`` (first ``pipeline_limit`` images) and times two augmented views
    of ``pipeline_images`` images. ``intra_op_threads``/``inter_op_threads``: 0 keeps
    TensorFlow's default. ``floor`` also times the training and attack passes of a plain Keras
    ResNet-18 (what a step cannot go below). ``parallel`` > 1 runs that many variants' processes
    at once: faster, but they compete for the cores, so only for checking that everything runs.
    """

    variants: tuple[str, ...] = ("s2s", "a2a", "a2s", "ds")
    batch_size: int = 64
    width: int = 64
    precision: str = "float32"          # float32 | mixed_bfloat16 | mixed_float16
    jit_compile: bool = False
    warmup_steps: int = 2
    steps: int = 5
    pretrain: str = "cifar10_resnet18"
    overrides: tuple[str, ...] = ()
    floor: bool = True                  # also time a plain Keras ResNet-18's two passes
    pipeline: bool = True
    pipeline_source: str = "data/cifar10_sample"
    pipeline_limit: Optional[int] = None
    pipeline_images: int = 1024
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    parallel: int = 1                   # variants measured at once (>1 distorts the timings)
    seed: int = 0

    def __post_init__(self):
        if not self.variants:
            raise ConfigError("variants must name at least one ACL variant.")
        if self.parallel < 1:
            raise ConfigError(f"parallel must be >= 1, got {self.parallel}.")
        if self.precision not in BENCH_PRECISIONS:
            raise ConfigError(f"precision must be one of {BENCH_PRECISIONS}, got "
                              f"{self.precision!r}.")
        if self.batch_size < 2 or self.width < 1:
            raise ConfigError(f"batch_size must be >= 2 and width >= 1, got {self.batch_size}, "
                              f"{self.width}.")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ConfigError(f"steps must be >= 1 and warmup_steps >= 0, got {self.steps}, "
                              f"{self.warmup_steps}.")
        if self.pipeline_images < 1 or (self.pipeline_limit is not None
                                        and self.pipeline_limit < 1):
            raise ConfigError(f"pipeline_images and pipeline_limit must be positive, got "
                              f"{self.pipeline_images}, {self.pipeline_limit}.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("intra_op_threads and inter_op_threads must be >= 0 (0: default).")


@dataclasses.dataclass
class StudyConfig:
    """The reproduction study (``python -m acl_tf.study``): the paper's Tables 3-5 and Fig. 3.

    Every pre-training starts from the pre-training config ``pretrain`` (a name under
    ``configs/pretrain/`` or a path) with ``pretrain_overrides`` applied and ``variant`` (and
    ``model.bn``) replaced, so all variants get the same budget; every fine-tuning starts from
    ``finetune`` with ``finetune_overrides`` (the linear protocols then add ``linear_overrides``).

    * Table 3: each of ``variants`` pre-trained, then AFF (TRADES) with the ``adv`` BN, plus a
      randomly initialised model (``random_init``) fine-tuned alike.
    * Table 4: each of ``bn_ablation`` (dual-BN variants) also pre-trained with a single BN, and
      its dual-BN encoder also fine-tuned with the ``normal`` BN.
    * Table 5: SLF and ALF on the frozen encoder of each of ``linear``, with each BN branch.
    * Fig. 3: the validation robust accuracy after every AFF epoch (``metrics.json``).
    """

    pretrain: str = "cifar10_resnet18"
    pretrain_overrides: tuple[str, ...] = ()
    finetune: str = "cifar10_paper"
    finetune_overrides: tuple[str, ...] = ()
    linear_overrides: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("s2s", "a2a", "a2s", "ds")
    random_init: bool = True
    bn_ablation: tuple[str, ...] = ("a2s", "ds")
    linear: tuple[str, ...] = ("ds",)

    def __post_init__(self):
        from acl_tf.trainers.pretrainer import DUAL_BN_VARIANTS, VARIANTS

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(f"variants must be a non-empty list of {VARIANTS}, got "
                              f"{list(self.variants)}.")
        for field in ("bn_ablation", "linear"):
            missing = [v for v in getattr(self, field) if v not in self.variants]
            if missing:
                raise ConfigError(f"{field} names {missing}, which are not among the study's "
                                  f"variants {list(self.variants)}.")
        single = [v for v in self.bn_ablation if v not in DUAL_BN_VARIANTS]
        if single:
            raise ConfigError(f"bn_ablation compares single and dual BN, so it takes dual-BN "
                              f"variants {DUAL_BN_VARIANTS} only, got {single}.")
