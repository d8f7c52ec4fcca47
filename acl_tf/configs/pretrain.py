"""ACL pre-training (``python -m acl_tf.pretrain``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from acl_tf.configs.choices import DUAL_BN_VARIANTS, Variant
from acl_tf.configs.fields import (
    ConfigBase,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
)
from acl_tf.configs.sections import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PGDConfig,
)

__all__ = ["PretrainConfig"]


@dataclasses.dataclass
class PretrainConfig(ConfigBase):
    """ACL pre-training (reference section 1). Defaults are the paper's settings."""

    variant: Variant = "ds"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=5))
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    batch_size: Annotated[int, Range(2)] = 512     # two views each: a contrastive batch needs 2
    epochs: PositiveInt = 1000
    temperature: PositiveFloat = 0.5
    ds_alpha: NonNegativeFloat = 1.0
    ds_average: bool = False           # the official code halves the DS sum
    seed: Seed = 0
    log_every_steps: PositiveInt = 50
    keep_checkpoints: PositiveInt = 3

    @property
    def dual_bn(self) -> bool:
        if self.model.bn == "auto":
            return self.variant in DUAL_BN_VARIANTS
        return self.model.bn == "dual"
