"""ACL pre-training (``python -m acl_tf.pretrain``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from acl_tf.configs.choices import (
    AIR_METHODS,
    DUAL_BN_VARIANTS,
    DYNAMIC_METHODS,
    Method,
    Variant,
)
from acl_tf.configs.fields import (
    ConfigBase,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
)
from acl_tf.configs.sections import (
    AirConfig,
    AugmentConfig,
    DynamicConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    PGDConfig,
)

from acl_tf.core.errors import ConfigError

__all__ = ["PretrainConfig"]


@dataclasses.dataclass
class PretrainConfig(ConfigBase):
    """ACL pre-training (reference section 1) and its successors. Defaults are the ACL paper's
    settings; ``method`` picks DynACL's schedules (section ``dynamic``) and AIR's regularisers
    (section ``air``) on top of the DS variant."""

    variant: Variant = "ds"
    method: Method = "acl"
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
    dynamic: DynamicConfig = dataclasses.field(default_factory=DynamicConfig)
    air: AirConfig = dataclasses.field(default_factory=AirConfig)

    def validate(self) -> None:
        if self.method != "acl" and self.variant != "ds":
            raise ConfigError(f"method {self.method!r} builds on the DS variant; got variant "
                              f"{self.variant!r} (use variant=ds, or method=acl).")
        if self.dual_bn is False and self.method != "acl":
            raise ConfigError(f"method {self.method!r} needs the dual BN (model.bn=auto or dual).")
        if self.uses_air and self.dynamic.momentum_encoder and self.dynamic_schedules:
            raise ConfigError("dynamic.momentum_encoder is the DynACL code's variant; AIR's code "
                              "has no momentum encoder (use method=dynacl, or set it false).")

    @property
    def dynamic_schedules(self) -> bool:
        """Whether DynACL's augmentation and stream-weight schedules apply."""
        return self.method in DYNAMIC_METHODS

    @property
    def uses_air(self) -> bool:
        return self.method in AIR_METHODS

    @property
    def momentum_encoder(self) -> bool:
        return self.dynamic_schedules and self.dynamic.momentum_encoder

    def augment_at(self, epoch: int) -> AugmentConfig:
        """The view augmentation of (1-based) ``epoch``: DynACL's annealed strength for the
        dynamic methods, ``augment`` itself otherwise."""
        if not self.dynamic_schedules:
            return self.augment
        return self.augment.at_strength(self.dynamic.strength(epoch, self.epochs))

    def stream_weights(self, epoch: int) -> tuple[float, float]:
        """(clean, adversarial) weights of the DS streams at (1-based) ``epoch``, before
        ``ds_average``'s halving: ``(1, ds_alpha)`` for ACL and ACL-AIR, DynACL's
        ``(1 - d, ds_alpha * (1 + d))`` for the dynamic methods."""
        delta = self.dynamic.stream_delta(epoch, self.epochs) if self.dynamic_schedules else 0.0
        return 1.0 - delta, self.ds_alpha * (1.0 + delta)

    @property
    def dual_bn(self) -> bool:
        if self.model.bn == "auto":
            return self.variant in DUAL_BN_VARIANTS
        return self.model.bn == "dual"
