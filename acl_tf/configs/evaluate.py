"""Robustness evaluation (``python -m acl_tf.evaluate``): AutoAttack, CIFAR-10-C and the
gradient-masking checks as sections, and the names of the evaluations."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Literal, Optional

from absl import logging

from acl_tf.configs.choices import (
    AUTOATTACK_ATTACKS,
    CIFAR10C_CORRUPTIONS,
    CIFAR10C_SEVERITIES,
    AutoAttackName,
    Branch,
    Corruption,
    Severity,
)
from acl_tf.configs.fields import (
    Choice,
    ConfigBase,
    PositiveInt,
    Probability,
    Range,
    Seed,
    choice_names,
)
from acl_tf.configs.sections import DataConfig, PGDConfig
from acl_tf.core.errors import ConfigError

__all__ = ["AutoAttackConfig", "Cifar10CConfig", "EvaluateConfig", "GuardConfig",
           "LIMIT_SUBSETS", "LimitSubset", "SINGLE_EVALUATIONS", "parse_attack_name"]

SINGLE_EVALUATIONS = ("clean", "autoattack", "corruptions")
# An epsilon in pixel units (images in [0, 1]), like attack.epsilon: 8/255 may be written so.
Epsilon = Probability
# The deprecated 1/255 units of eps_sweep_255 and guards.large_epsilon_255 (kept for 0.2).
Epsilon255 = Annotated[float, Range(0, 255)]

LimitSubset = Annotated[
    Literal["balanced", "first"],
    Choice("subset", "balanced: the same number of images of every class (a deterministic "
                     "random draw); first: the first N images in file order")]
LIMIT_SUBSETS = choice_names(LimitSubset)


def _deprecated_255(owner, old: str, new: str) -> None:
    """Field ``old`` of ``owner`` (1/255 units, deprecated) given: warns and sets field ``new``
    (pixel units) from it. ``old`` is cleared, so the resolved config (``config.json``) holds
    ``new`` only; where both were given, ``old`` wins (it is the one a warning names)."""
    value = getattr(owner, old.rsplit(".", 1)[-1])
    if isinstance(value, tuple):
        spelled = "[" + ", ".join(f"{v:g}/255" if v else "0" for v in value) + "]"
        converted = tuple(v / 255 for v in value)
    else:
        spelled, converted = f"{value:g}/255", value / 255
    logging.warning("config field %s is deprecated (1/255 units); use %s in fractions of the "
                    "[0, 1] pixel range: %s=%s", old, new, new, spelled)
    object.__setattr__(owner, new.rsplit(".", 1)[-1], converted)
    object.__setattr__(owner, old.rsplit(".", 1)[-1], None)


def parse_attack_name(name) -> tuple[str, Optional[int]]:
    """``clean`` / ``autoattack`` / ``corruptions`` -> (name, None); ``pgdK`` -> ("pgd", K)."""
    text = str(name).strip().lower()
    if text in SINGLE_EVALUATIONS:
        return text, None
    match = re.fullmatch(r"pgd(\d+)", text)
    if match and int(match.group(1)) >= 1:
        return "pgd", int(match.group(1))
    raise ConfigError(f"Unknown attack {name!r}; expected clean, pgdK with K >= 1 steps (e.g. "
                      "pgd20), autoattack or corruptions.")


@dataclasses.dataclass(frozen=True)
class AutoAttackConfig(ConfigBase):
    """The AutoAttack schedule (defaults: the standard version; epsilon is passed separately).

    ``attacks`` is the list asked for; attacks that ART cannot provide (``fab-t``) are skipped and
    reported. ``target_classes`` is capped at ``num_classes - 1``.
    """

    attacks: tuple[AutoAttackName, ...] = AUTOATTACK_ATTACKS
    apgd_iterations: PositiveInt = 100
    apgd_restarts: PositiveInt = 1
    target_classes: PositiveInt = 9
    square_queries: PositiveInt = 5000
    square_p_init: Annotated[float, Range(0, 1, low_open=True)] = 0.8
    square_restarts: PositiveInt = 1

    def validate(self):
        if not self.attacks:
            raise ConfigError(f"attacks must name at least one AutoAttack attack of "
                              f"{AUTOATTACK_ATTACKS}.")


@dataclasses.dataclass(frozen=True)
class Cifar10CConfig(ConfigBase):
    """Which CIFAR-10-C configs to evaluate and where TFDS keeps them.

    ``data_dir``: TFDS data directory (None = TFDS default, ``~/tensorflow_datasets``);
    ``download``: let TFDS download and prepare missing configs; ``limit``: first N test images
    of every config (None = all 10,000).
    """

    data_dir: Optional[str] = None
    download: bool = False
    corruptions: tuple[Corruption, ...] = CIFAR10C_CORRUPTIONS
    severities: tuple[Severity, ...] = CIFAR10C_SEVERITIES
    limit: Optional[PositiveInt] = None

    def validate(self):
        if not self.corruptions:
            raise ConfigError(f"corruptions must name at least one CIFAR-10-C "
                              f"corruption of {CIFAR10C_CORRUPTIONS}.")
        if not self.severities:
            raise ConfigError(f"severities must name at least one of "
                              f"{CIFAR10C_SEVERITIES}.")


@dataclasses.dataclass(frozen=True)
class GuardConfig(ConfigBase):
    """Settings of the gradient-masking checks.

    ``steps``: extra PGD step counts run for the ``steps`` check (besides the requested pgdK);
    ``large_epsilon``: the epsilon (pixel units, e.g. ``64/255``) that must drive accuracy to
    ``large_epsilon_max_accuracy`` or below; ``tolerance``: allowed rise in accuracy.
    ``large_epsilon_255`` is its deprecated 1/255-unit spelling (read, converted, warned about).
    """

    enabled: bool = True
    steps: tuple[PositiveInt, ...] = (10, 50)
    large_epsilon: Annotated[float, Range(0, 1, low_open=True)] = 64 / 255
    large_epsilon_max_accuracy: Probability = 0.05
    tolerance: Probability = 0.01
    large_epsilon_255: Optional[Annotated[float, Range(0, 255, low_open=True)]] = None

    def validate(self):
        if self.large_epsilon_255 is not None:
            _deprecated_255(self, "guards.large_epsilon_255", "guards.large_epsilon")


@dataclasses.dataclass
class EvaluateConfig(ConfigBase):
    """Robustness evaluation of a classifier (reference section 3). Defaults: the paper's TA and
    PGD-20 RA (eps 8/255, step 2/255, uniform start) plus the standard AutoAttack schedule.

    ``data.source`` / ``data.test_split`` / ``data.limit`` pick the evaluated images. With
    ``limit`` N, ``subset`` says which N: ``balanced`` (default) draws N / num_classes images of
    every class (the draw fine-tuning's ``test_limit`` makes, seed 0; a remainder goes one image
    each to randomly drawn classes), ``first`` takes the first N in file order (CIFAR-10's test
    TFRecord is sorted by class: its first 1,000 images are all airplanes). ``attacks``:
    ``clean``, ``pgdK`` (K steps of ``attack``), ``autoattack``, ``corruptions`` (CIFAR-10-C).
    ``bn``: ``adv`` | ``normal`` | null (the classifier's own default branch). ``eps_sweep``:
    epsilons (pixel units, e.g. ``[0, 2/255, 8/255]``) of the accuracy-vs-epsilon curve, PGD with
    ``sweep_steps`` steps of ``sweep_step_ratio * eps``; empty disables it. ``eps_sweep_255``
    is its deprecated 1/255-unit spelling (read, converted, warned about).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    attacks: tuple[str, ...] = ("clean", "pgd20", "autoattack")
    bn: Optional[Branch] = None
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    restarts: PositiveInt = 1
    autoattack: AutoAttackConfig = dataclasses.field(default_factory=AutoAttackConfig)
    eps_sweep: tuple[Epsilon, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255,
                                      64 / 255)
    sweep_steps: PositiveInt = 20
    sweep_step_ratio: Annotated[float, Range(0, 1, low_open=True)] = 0.25   # of each epsilon
    guards: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    cifar10c: Cifar10CConfig = dataclasses.field(default_factory=Cifar10CConfig)
    batch_size: PositiveInt = 256
    seed: Seed = 0
    subset: LimitSubset = "balanced"
    eps_sweep_255: Optional[tuple[Epsilon255, ...]] = None

    def validate(self):
        if self.eps_sweep_255 is not None:
            _deprecated_255(self, "eps_sweep_255", "eps_sweep")
        if not self.attacks:
            raise ConfigError("attacks must name at least one evaluation.")
        names = []
        for i, name in enumerate(self.attacks):
            try:
                parse_attack_name(name)
            except ConfigError as err:
                raise ConfigError(f"attacks[{i}]: {err}") from None
            names.append(str(name).strip().lower())
        object.__setattr__(self, "attacks", tuple(names))
