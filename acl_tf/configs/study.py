"""The studies of ``acl-tf study`` (``python -m acl_tf.study``): the reproduction study
(:class:`StudyConfig`) and the comparison of ACL's successors (:class:`MethodsStudyConfig`);
:func:`load_study_config` tells them apart by the config's fields."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Iterable, Literal, Optional, Union


from acl_tf.configs.choices import (
    DUAL_BN_VARIANTS,
    VARIANTS,
    Branch,
    FinetuneMode,
    Variant,
)
from acl_tf.configs.fields import Choice, ConfigBase, Seed, choice_names
from acl_tf.configs.loader import apply_overrides, config_path, load_config, read_values
from acl_tf.core.errors import ConfigError

__all__ = ["DEFAULT_METHODS", "PUBLISHED_METHODS", "MethodsStudyConfig", "PublishedMethod",
           "StudyConfig", "StudyMethod", "load_study_config"]


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


# The rows of the RobustSSL benchmark's leaderboard (CIFAR-10, ResNet-18) a method can be set
# beside (acl_tf.studies.methods.PUBLISHED holds the figures).
PublishedMethod = Annotated[
    Literal["acl", "dynacl", "dynacl++", "dynacl-air", "dynacl-air++"],
    Choice("published method", "a row of the RobustSSL benchmark's CIFAR-10 leaderboard")]
PUBLISHED_METHODS = choice_names(PublishedMethod)

_KEY = re.compile(r"[a-z0-9][a-z0-9_]*")


@dataclasses.dataclass
class StudyMethod(ConfigBase):
    """One method of :class:`MethodsStudyConfig`.

    ``key`` names its runs (``pretrain/<key>``, ``postprocess/<key>``, ``aff/<key>_seed<s>``, ...;
    lower-case letters, digits, ``_``), ``name`` its rows and legend entries (default: ``key``).
    Its pre-training is the pre-training config ``pretrain`` (a preset name or a path) with the
    study's common ``pretrain_overrides``, then its own ``pretrain_overrides``; with
    ``postprocess`` (a post-processing preset or path, e.g. ``cifar10_dynacl`` for DynACL++) the
    pre-trained encoder is post-processed (the study's ``postprocess_overrides``, then the
    method's) and fine-tuning starts from the result. ``published``: the leaderboard row to set
    beside its results (None: none)."""

    key: str = "acl"
    name: str = ""
    pretrain: str = "cifar10_official"
    pretrain_overrides: tuple[str, ...] = ()
    postprocess: Optional[str] = None
    postprocess_overrides: tuple[str, ...] = ()
    published: Optional[PublishedMethod] = None

    def validate(self):
        if not _KEY.fullmatch(self.key):
            raise ConfigError(f"key must be lower-case letters, digits and '_' (it names the "
                              f"method's run directories), got {self.key!r}.")
        if not self.name:
            object.__setattr__(self, "name", self.key)
        if self.postprocess_overrides and not self.postprocess:
            raise ConfigError(f"method {self.key!r} has postprocess_overrides but no "
                              "postprocess config.")


#: The methods compared by default, each pre-trained as its authors' code does (the presets'
#: comments say how): ACL's DS, DynACL, DynACL-AIR, and the "++" post-processing of the two.
DEFAULT_METHODS = (
    StudyMethod(key="acl", name="ACL (DS)", pretrain="cifar10_official", published="acl"),
    StudyMethod(key="dynacl", name="DynACL", pretrain="cifar10_dynacl", published="dynacl"),
    StudyMethod(key="dynacl_pp", name="DynACL++", pretrain="cifar10_dynacl",
                postprocess="cifar10_dynacl", published="dynacl++"),
    StudyMethod(key="dynacl_air", name="DynACL-AIR", pretrain="cifar10_dynacl_air",
                published="dynacl-air"),
    StudyMethod(key="dynacl_air_pp", name="DynACL-AIR++", pretrain="cifar10_dynacl_air",
                postprocess="cifar10_dynacl_air", published="dynacl-air++"),
)


@dataclasses.dataclass
class MethodsStudyConfig(ConfigBase):
    """The comparison of ACL's successors (:mod:`acl_tf.studies.methods`) on one budget.

    Every method of ``methods`` is pre-trained from its own pre-training config with the common
    ``pretrain_overrides`` (the budget: images, width, epochs, batch, learning rate, the scaled
    schedules) and then its own; methods whose resolved pre-training configs are equal share one
    pre-training run (DynACL and DynACL++, say). Post-processing, where a method has it, gets the
    common ``postprocess_overrides``, then the method's. Each resulting encoder is then fine-tuned
    with each of ``modes`` (AFF; SLF and ALF: the linear protocols, frozen encoder) on the ``bn``
    branch and with each of ``seeds`` as the fine-tuning seed: the fine-tuning config
    ``finetune`` with ``finetune_overrides``, plus ``linear_overrides`` for SLF and ALF. All
    methods get the same fine-tuning runs, so every difference is the pre-training's.
    """

    methods: tuple[StudyMethod, ...] = DEFAULT_METHODS
    pretrain_overrides: tuple[str, ...] = ()
    postprocess_overrides: tuple[str, ...] = ()
    finetune: str = "cifar10_paper"
    finetune_overrides: tuple[str, ...] = ()
    linear_overrides: tuple[str, ...] = ()
    modes: tuple[FinetuneMode, ...] = ("aff", "slf")
    bn: Branch = "adv"
    seeds: tuple[Seed, ...] = (0,)

    def validate(self):
        for field, values in (("methods", [m.key for m in self.methods]),
                              ("modes", self.modes), ("seeds", self.seeds)):
            if not values:
                raise ConfigError(f"{field} must be a non-empty list, got [].")
            repeated = sorted({v for v in values if list(values).count(v) > 1})
            if repeated:
                raise ConfigError(f"{field} must be distinct; {repeated} appear more than once"
                                  + (" (as keys)." if field == "methods" else "."))


def load_study_config(name_or_path: str, overrides: Iterable[str] = ()
                      ) -> Union[StudyConfig, MethodsStudyConfig]:
    """A study config of either kind: a :class:`MethodsStudyConfig` where the file (or an
    override) sets ``methods``, a :class:`StudyConfig` otherwise."""
    values = read_values(config_path("study", name_or_path))
    overrides = list(overrides)
    cls = MethodsStudyConfig if "methods" in apply_overrides(values, overrides) else StudyConfig
    return load_config(cls, "study", name_or_path, overrides)
