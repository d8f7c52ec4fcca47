"""Typed, named experiment configs: pure Python (and PyYAML), no TensorFlow.

A config is a (nested) dataclass whose field annotations say what each field accepts: its type,
its choice of names (``Literal``) or its numeric range (``Annotated[float, Range(0, 1)]``).
Named configs (presets) are YAML files shipped in the package,
``acl_tf/configs/presets/<kind>/NAME.yaml``, holding only the fields that differ from the
dataclass defaults; a command line applies ``key.sub=value`` overrides on top, and the resolved
config is written into the run directory as ``config.json``.
Unknown fields and values of the wrong type or out of range are :class:`ConfigError` naming the
field, the value and what would be valid, whether the config is loaded or built in Python.

Modules: :mod:`~acl_tf.configs.fields` (field typing and checking), :mod:`~acl_tf.configs.loader`
(files, overrides, named configs), :mod:`~acl_tf.configs.choices` (every choice of names),
:mod:`~acl_tf.configs.sections` (data, model, optimisers, attack, augmentation) and one module per
experiment (pretrain, finetune, evaluate, semisup, bench, study). Library code imports its
choices from here.
"""

from acl_tf.configs.bench import BenchConfig
from acl_tf.configs.choices import (
    AIR_DIVERGENCES,
    AIR_METHODS,
    DYNAMIC_METHODS,
    INTERPOLATIONS,
    METHODS,
    AirDivergence,
    Interpolation,
    Method,
    check_method,
    ALPHA_CONVENTIONS,
    ARCHITECTURES,
    AUTOATTACK_ATTACKS,
    BENCH_PRECISIONS,
    BN_MODES,
    BRANCHES,
    CIFAR10C_CORRUPTIONS,
    CIFAR10C_SEVERITIES,
    DUAL_BN_VARIANTS,
    FINETUNE_MODES,
    HEAD_LAYERS,
    OPTIMIZERS,
    RANDOM_STARTS,
    SCHEDULES,
    SELECT_BY,
    SEMISUP_STEPS,
    STRATEGIES,
    VARIANTS,
    AlphaConvention,
    Architecture,
    AutoAttackName,
    BnMode,
    Branch,
    Corruption,
    FinetuneMode,
    HeadLayers,
    OptimizerName,
    Precision,
    RandomStart,
    Schedule,
    SelectBy,
    SemisupStep,
    Severity,
    Strategy,
    Variant,
    check_branch,
    check_mode,
    check_variant,
)
from acl_tf.configs.evaluate import (
    SINGLE_EVALUATIONS,
    AutoAttackConfig,
    Cifar10CConfig,
    EvaluateConfig,
    GuardConfig,
    parse_attack_name,
)
from acl_tf.configs.fields import (
    Choice,
    ConfigBase,
    Fraction,
    NonNegative,
    NonNegativeFloat,
    NonNegativeInt,
    Positive,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    Seed,
    check_choice,
    check_field,
    check_value,
    choice_names,
    coerce,
    field_types,
    from_dict,
    to_dict,
)
from acl_tf.configs.finetune import FinetuneConfig
from acl_tf.configs.postprocess import PostprocessConfig
from acl_tf.configs.loader import (
    CONFIG_ROOT,
    apply_overrides,
    available_configs,
    config_path,
    load_config,
    load_run_config,
    parse_override,
    read_config,
    write_config,
)
from acl_tf.configs.pretrain import PretrainConfig
from acl_tf.configs.sections import (
    AirConfig,
    AugmentConfig,
    DynamicConfig,
    DataConfig,
    FinetuneOptimizerConfig,
    ModelConfig,
    OptimizerConfig,
    PGDConfig,
    check_crop_args,
    check_jitter_args,
)
from acl_tf.configs.semisup import SemisupConfig, SemisupStudentConfig, SemisupTeacherConfig
from acl_tf.configs.study import (
    MethodsStudyConfig,
    StudyConfig,
    StudyMethod,
    load_study_config,
)
from acl_tf.core.errors import ConfigError

__all__ = [
    "AIR_DIVERGENCES", "AIR_METHODS", "AirConfig", "AirDivergence", "DYNAMIC_METHODS",
    "DynamicConfig", "INTERPOLATIONS", "Interpolation", "METHODS", "Method", "check_method",
    "ALPHA_CONVENTIONS", "ARCHITECTURES", "AUTOATTACK_ATTACKS", "BENCH_PRECISIONS", "BN_MODES",
    "BRANCHES", "CIFAR10C_CORRUPTIONS", "CIFAR10C_SEVERITIES", "CONFIG_ROOT", "DUAL_BN_VARIANTS",
    "FINETUNE_MODES", "HEAD_LAYERS", "OPTIMIZERS", "RANDOM_STARTS", "SCHEDULES", "SELECT_BY",
    "SEMISUP_STEPS", "SINGLE_EVALUATIONS", "STRATEGIES", "VARIANTS",
    "AlphaConvention", "Architecture", "AugmentConfig", "AutoAttackConfig", "AutoAttackName",
    "BenchConfig", "BnMode", "Branch", "Choice", "Cifar10CConfig", "ConfigBase", "ConfigError",
    "Corruption", "DataConfig", "EvaluateConfig", "FinetuneConfig", "FinetuneMode",
    "FinetuneOptimizerConfig", "Fraction", "GuardConfig", "HeadLayers", "ModelConfig",
    "NonNegative", "NonNegativeFloat", "NonNegativeInt", "OptimizerConfig", "OptimizerName",
    "PGDConfig", "Positive", "PositiveFloat", "PositiveInt", "Precision", "PretrainConfig",
    "Probability", "RandomStart", "Range", "Schedule", "Seed", "SelectBy", "SemisupConfig",
    "SemisupStep", "SemisupStudentConfig", "SemisupTeacherConfig", "Severity", "Strategy",
    "StudyConfig", "Variant",
    "MethodsStudyConfig", "StudyMethod", "load_study_config",
    "PostprocessConfig",
    "apply_overrides", "available_configs", "check_branch", "check_choice", "check_crop_args",
    "check_field", "check_jitter_args", "check_mode", "check_value", "check_variant",
    "choice_names", "coerce", "config_path", "field_types", "from_dict", "load_config",
    "load_run_config",
    "parse_attack_name", "parse_override", "read_config", "to_dict", "write_config",
]
