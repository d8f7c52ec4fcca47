"""Robustness evaluation (``python -m acl_tf.evaluate``): AutoAttack, CIFAR-10-C and the
gradient-masking checks as sections, and the names of the evaluations."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Optional

from acl_tf.configs.choices import (
    AUTOATTACK_ATTACKS,
    CIFAR10C_CORRUPTIONS,
    CIFAR10C_SEVERITIES,
    AutoAttackName,
    Branch,
    Corruption,
    Severity,
)
from acl_tf.configs.fields import ConfigBase, PositiveInt, Probability, Range, Seed
from acl_tf.configs.sections import DataConfig, PGDConfig
from acl_tf.core.errors import ConfigError

__all__ = ["AutoAttackConfig", "Cifar10CConfig", "EvaluateConfig", "GuardConfig",
           "SINGLE_EVALUATIONS", "parse_attack_name"]

SINGLE_EVALUATIONS = ("clean", "autoattack", "corruptions")
# An epsilon in 1/255 units: at most the whole pixel range.
Epsilon255 = Annotated[float, Range(0, 255)]


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
    ``large_epsilon_255``: the epsilon (in 1/255 units) that must drive accuracy to
    ``large_epsilon_max_accuracy`` or below; ``tolerance``: allowed rise in accuracy.
    """

    enabled: bool = True
    steps: tuple[PositiveInt, ...] = (10, 50)
    large_epsilon_255: Annotated[float, Range(0, 255, low_open=True)] = 64.0
    large_epsilon_max_accuracy: Probability = 0.05
    tolerance: Probability = 0.01


@dataclasses.dataclass
class EvaluateConfig(ConfigBase):
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
    bn: Optional[Branch] = None
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    restarts: PositiveInt = 1
    autoattack: AutoAttackConfig = dataclasses.field(default_factory=AutoAttackConfig)
    eps_sweep_255: tuple[Epsilon255, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    sweep_steps: PositiveInt = 20
    sweep_step_ratio: Annotated[float, Range(0, 1, low_open=True)] = 0.25   # of each epsilon
    guards: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    cifar10c: Cifar10CConfig = dataclasses.field(default_factory=Cifar10CConfig)
    batch_size: PositiveInt = 256
    seed: Seed = 0

    def validate(self):
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
