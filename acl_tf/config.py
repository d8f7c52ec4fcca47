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

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config file, name, field or value that cannot be used."""


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
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_config(cls, path):
    """Reads a ``config.json`` written by :func:`write_config`."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read config {str(path)!r}: {err}") from err
    return from_dict(cls, values)


# -- Sections shared by the experiments ---------------------------------------------------------
# (Imported late so that ``acl_tf.config`` stays importable without TensorFlow work at import.)
from acl_tf.attacks import PGDConfig  # noqa: E402
from acl_tf.augment import AugmentConfig  # noqa: E402

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
        from acl_tf.training.pretrainer import check_variant

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
