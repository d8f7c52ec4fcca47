"""The reproduction study (``python -m acl_tf.study``)."""

from __future__ import annotations

import dataclasses

from acl_tf.configs.choices import DUAL_BN_VARIANTS, VARIANTS, Variant
from acl_tf.configs.fields import ConfigBase
from acl_tf.core.errors import ConfigError

__all__ = ["StudyConfig"]


@dataclasses.dataclass
class StudyConfig(ConfigBase):
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
    variants: tuple[Variant, ...] = VARIANTS
    random_init: bool = True
    bn_ablation: tuple[Variant, ...] = DUAL_BN_VARIANTS
    linear: tuple[Variant, ...] = ("ds",)

    def validate(self):
        if not self.variants:
            raise ConfigError(f"variants must be a non-empty list of {VARIANTS}, got [].")
        for field in ("bn_ablation", "linear"):
            missing = [v for v in getattr(self, field) if v not in self.variants]
            if missing:
                raise ConfigError(f"{field} names {missing}, which are not among the study's "
                                  f"variants {list(self.variants)}.")
        single = [v for v in self.bn_ablation if v not in DUAL_BN_VARIANTS]
        if single:
            raise ConfigError(f"bn_ablation compares single and dual BN, so it takes dual-BN "
                              f"variants {DUAL_BN_VARIANTS} only, got {single}.")
