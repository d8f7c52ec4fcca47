"""Sanity checks that flag gradient masking (Athalye et al. 2018; Carlini et al. 2019).

A robust-accuracy figure is only trustworthy if the attack behaves like an attack:

* ``steps``: robust accuracy must not rise when PGD runs more steps (same epsilon and step size);
* ``epsilon``: robust accuracy must not rise with a larger epsilon;
* ``large_epsilon``: at a large epsilon (64/255 by default: the ball then lets the attacker move
  every pixel by a quarter of its range, enough to erase any CIFAR image) robust accuracy must
  fall to about zero (<= 5% by default). A model that stays accurate there, or predicts a constant
  class (accuracy ~10% for any input), is masking gradients or broken;
* ``autoattack_vs_pgd``: AutoAttack, the stronger attack, must not give a higher robust accuracy
  than PGD at the same epsilon.

(Robust accuracy can never exceed clean accuracy here: an example only counts as robust if it
is also classified correctly when clean.)

Each check returns a :class:`GuardResult` with status ``pass``, ``warn`` (with the numbers) or
``skipped`` (the figures it needs were not computed). ``tolerance`` (absolute accuracy, 1% by
default) absorbs the noise of random starts on small test sets.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from acl_tf.configs import GuardConfig  # noqa: F401 (re-exported)

__all__ = ["GuardConfig", "GuardResult", "check_non_increasing", "steps_guard", "epsilon_guard",
           "large_epsilon_guard", "autoattack_vs_pgd_guard"]

PASS, WARN, SKIPPED = "pass", "warn", "skipped"


@dataclasses.dataclass
class GuardResult:
    """One check: ``status`` is ``pass``, ``warn`` or ``skipped``."""

    name: str
    status: str
    message: str
    values: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def check_non_increasing(name: str, accuracy_by: Mapping[float, float], *, what: str,
                         tolerance: float = 0.01, unit=lambda k: f"{k:g}") -> GuardResult:
    """Warns if accuracy rises by more than ``tolerance`` between any smaller and larger key."""
    points = sorted((float(k), float(v)) for k, v in accuracy_by.items())
    values = {unit(k): v for k, v in points}
    if len(points) < 2:
        return GuardResult(name, SKIPPED, f"needs robust accuracy at >= 2 {what} values, got "
                           f"{len(points)}", values)
    rises = []
    for i, (k_lo, a_lo) in enumerate(points):
        for k_hi, a_hi in points[i + 1:]:
            if k_hi > k_lo and a_hi > a_lo + tolerance:
                rises.append(f"{_pct(a_lo)} at {what} {unit(k_lo)} -> {_pct(a_hi)} at "
                             f"{unit(k_hi)}")
    if rises:
        return GuardResult(name, WARN, f"robust accuracy rises with larger {what} (possible "
                           f"gradient masking or a weak attack): " + "; ".join(rises), values)
    listing = ", ".join(f"{unit(k)}: {_pct(a)}" for k, a in points)
    return GuardResult(name, PASS, f"robust accuracy does not rise with {what} ({listing})",
                       values)


def steps_guard(accuracy_by_steps: Mapping[int, float], tolerance: float = 0.01) -> GuardResult:
    """More PGD steps must not give higher robust accuracy."""
    return check_non_increasing("steps", accuracy_by_steps, what="PGD steps",
                                tolerance=tolerance, unit=lambda k: f"{int(k)}")


def epsilon_guard(accuracy_by_epsilon: Mapping[float, float],
                  tolerance: float = 0.01) -> GuardResult:
    """A larger epsilon must not give higher robust accuracy (keys in pixel units)."""
    return check_non_increasing("epsilon", accuracy_by_epsilon, what="epsilon",
                                tolerance=tolerance, unit=lambda k: f"{k * 255:g}/255")


def large_epsilon_guard(epsilon: float, accuracy: Optional[float],
                        max_accuracy: float = 0.05) -> GuardResult:
    """At a large epsilon, robust accuracy must be ~0."""
    values = {"epsilon": epsilon, "epsilon_255": epsilon * 255, "accuracy": accuracy,
              "max_accuracy": max_accuracy}
    if accuracy is None:
        return GuardResult("large_epsilon", SKIPPED, f"no robust accuracy at {epsilon * 255:g}"
                           "/255 (enable the epsilon sweep)", values)
    if accuracy > max_accuracy:
        return GuardResult("large_epsilon", WARN, f"robust accuracy {_pct(accuracy)} at "
                           f"epsilon {epsilon * 255:g}/255 is above {_pct(max_accuracy)}: the "
                           "attack does not break the model even with a huge budget (gradient "
                           "masking, a constant classifier, or too few steps)", values)
    return GuardResult("large_epsilon", PASS, f"robust accuracy {_pct(accuracy)} at epsilon "
                       f"{epsilon * 255:g}/255 is <= {_pct(max_accuracy)}", values)


def autoattack_vs_pgd_guard(autoattack: Optional[float], pgd: Mapping[str, float],
                            tolerance: float = 0.01) -> GuardResult:
    """AutoAttack must not leave more examples robust than PGD at the same epsilon."""
    values = {"autoattack": autoattack, **{k: v for k, v in pgd.items()}}
    if autoattack is None or not pgd:
        return GuardResult("autoattack_vs_pgd", SKIPPED, "needs both AutoAttack and PGD at the "
                           "same epsilon", values)
    weaker = {k: v for k, v in pgd.items() if autoattack > v + tolerance}
    if weaker:
        return GuardResult("autoattack_vs_pgd", WARN, f"AutoAttack robust accuracy "
                           f"{_pct(autoattack)} exceeds " + ", ".join(
                               f"{k} {_pct(v)}" for k, v in weaker.items())
                           + " (AutoAttack ran with too small a budget, or something is off)",
                           values)
    return GuardResult("autoattack_vs_pgd", PASS, f"AutoAttack {_pct(autoattack)} <= PGD "
                       f"({', '.join(f'{k} {_pct(v)}' for k, v in pgd.items())})", values)

