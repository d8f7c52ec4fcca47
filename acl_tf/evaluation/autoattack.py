"""AutoAttack (Croce & Hein, 2020) through the adversarial-robustness-toolbox (ART 1.20).

The standard AutoAttack runs, one after the other and each only on the examples that are still
robust: APGD-CE (untargeted, 100 iterations), APGD-T (targeted DLR loss, 100 iterations, the 9
classes with the highest clean logits as targets), FAB-T (targeted, 9 targets) and Square (5000
queries, p_init 0.8). An example counts as robust only if it is classified correctly when clean
and survives every attack.

What ART 1.20 provides and what this module therefore runs:

* ``apgd-ce``: ``art.attacks.evasion.AutoProjectedGradientDescent(loss_type="cross_entropy",
  targeted=False)``; initial step ``2 * eps`` as in the original APGD.
* ``apgd-t``: the same class with ``loss_type="difference_logits_ratio", targeted=True``, run once
  per target class (ART's targeted DLR is ``(z_t - z_other) / (z_1 - z_3)``, a close variant of
  the original ``(z_t - z_y) / (z_1 - (z_3 + z_4) / 2)``).
* ``fab-t``: **not available** in ART 1.20 (it has no FAB attack); it is skipped and the result
  says so (``attacks_skipped``).
* ``square``: ``art.attacks.evasion.SquareAttack(norm=inf)`` with ``max_iter`` queries.

ART's own ``AutoAttack`` class is not used as the driver: its ``generate`` imports the
``multiprocess`` package (not an ART dependency, not installed here), its ``targeted=True`` mode
re-runs every listed attack in both untargeted and targeted form, and in targeted mode it only
counts an example as broken when it lands on the target class. The schedule here is the standard
one, uses ART's attack implementations, and checks every adversarial example itself (inside the
epsilon-ball and [0, 1], re-classified with the Keras model) before counting it.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import tensorflow as tf

from acl_tf.configs import AUTOATTACK_ATTACKS, AutoAttackConfig  # noqa: F401 (re-exported)
from acl_tf.evaluation.robustness import (
    AttackResult,
    _batches,
    _check_batch_size,
    _check_inputs,
    predict_labels,
    resolve_branch,
)

__all__ = ["AUTOATTACK_ATTACKS", "AVAILABLE_ATTACKS", "UNAVAILABLE_ATTACKS", "AutoAttackConfig",
           "BranchModel", "autoattack_accuracy", "art_version"]

AVAILABLE_ATTACKS = ("apgd-ce", "apgd-t", "square")
UNAVAILABLE_ATTACKS = {"fab-t": "ART 1.20 has no FAB attack"}
_NORM_SLACK = 1e-5   # float32 round-off allowed when checking ||x_adv - x||_inf <= eps


class BranchModel:
    """``x -> model(x, training=False, branch=branch)``: the callable ART wraps (one BN branch,
    inference-mode BN whatever ART asks for)."""

    def __init__(self, model, branch: Optional[str]):
        self.model = model
        self.branch = branch

    def __call__(self, x, training=False):
        del training   # evaluation always uses the moving BN statistics
        return self.model(x, training=False, branch=self.branch)


def art_version() -> Optional[str]:
    """The installed ART version (read from the package metadata: importing ART only to name its
    version would print its import-time notices)."""
    from importlib import metadata

    try:
        return metadata.version("adversarial-robustness-toolbox")
    except metadata.PackageNotFoundError:
        return None


def _import_art():
    import logging as std_logging
    import warnings

    # ART's import notices (its data path; no PyTorch, which AutoAttack here does not use).
    std_logging.getLogger("art").setLevel(max(std_logging.getLogger("art").level,
                                              std_logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PyTorch not found")
            from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
            from art.estimators.classification import TensorFlowV2Classifier
    except ImportError as err:
        raise ImportError("AutoAttack needs adversarial-robustness-toolbox: pip install "
                          "'adversarial-robustness-toolbox==1.20.1' (or the [robustness] extra)"
                          ) from err
    return AutoProjectedGradientDescent, SquareAttack, TensorFlowV2Classifier


def _settings(config: AutoAttackConfig, eps: float, num_classes: int) -> dict:
    """Exactly what is run, attack by attack."""
    n_targets = min(config.target_classes, num_classes - 1)
    table = {
        "apgd-ce": {"implementation": "art.attacks.evasion.AutoProjectedGradientDescent",
                    "loss": "cross_entropy", "targeted": False, "norm": "Linf", "epsilon": eps,
                    "initial_step": 2 * eps, "iterations": config.apgd_iterations,
                    "restarts": config.apgd_restarts},
        "apgd-t": {"implementation": "art.attacks.evasion.AutoProjectedGradientDescent",
                   "loss": "difference_logits_ratio (ART targeted variant)", "targeted": True,
                   "target_classes": n_targets, "target_order": "highest clean logits first",
                   "norm": "Linf", "epsilon": eps, "initial_step": 2 * eps,
                   "iterations": config.apgd_iterations, "restarts": config.apgd_restarts},
        "square": {"implementation": "art.attacks.evasion.SquareAttack", "norm": "Linf",
                   "epsilon": eps, "queries": config.square_queries,
                   "p_init": config.square_p_init, "restarts": config.square_restarts},
    }
    return {a: table[a] for a in config.attacks if a in table}


def autoattack_accuracy(model, x, y, epsilon: float = 8 / 255,
                        config: AutoAttackConfig = AutoAttackConfig(), *, branch: Optional[str] = None, num_classes: Optional[int] = None,
                        batch_size: int = 256, seed: int = 0) -> AttackResult:
    """Robust accuracy under (the ART-available part of) AutoAttack, on one BN branch.

    Returns an :class:`AttackResult` named ``autoattack`` whose ``settings`` list the attacks run
    with their settings and ``attacks_skipped``, and whose ``details`` give the robust accuracy
    after each attack (``robust_accuracy_after``) and which attack broke how many examples.
    NumPy's global random state (used by ART) is seeded with ``seed`` and restored afterwards.
    """
    x, y = _check_inputs(x, y)
    batch_size = _check_batch_size(batch_size)
    if not epsilon > 0:
        raise ValueError(f"AutoAttack epsilon must be > 0, got {epsilon}.")
    branch = resolve_branch(model, branch)
    APGD, Square, TensorFlowV2Classifier = _import_art()
    start = time.perf_counter()

    wrapped = BranchModel(model, branch)
    if num_classes is None:
        num_classes = int(wrapped(tf.constant(x[:1])).shape[-1]) if len(x) else 1
    if len(x) and num_classes < 3 and "apgd-t" in config.attacks:
        raise ValueError("APGD-T (DLR loss) needs at least 3 classes.")
    estimator = TensorFlowV2Classifier(
        model=wrapped, nb_classes=num_classes, input_shape=tuple(x.shape[1:]),
        loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0))
    eps = float(epsilon)
    n_targets = min(config.target_classes, num_classes - 1)
    run = [a for a in config.attacks if a in AVAILABLE_ATTACKS]
    skipped = {a: UNAVAILABLE_ATTACKS[a] for a in config.attacks if a in UNAVAILABLE_ATTACKS}

    def make(name):
        if name == "apgd-ce":
            return APGD(estimator, norm=np.inf, eps=eps, eps_step=2 * eps,
                        max_iter=config.apgd_iterations, targeted=False,
                        nb_random_init=config.apgd_restarts, batch_size=batch_size,
                        loss_type="cross_entropy", verbose=False)
        if name == "apgd-t":
            return APGD(estimator, norm=np.inf, eps=eps, eps_step=2 * eps,
                        max_iter=config.apgd_iterations, targeted=True,
                        nb_random_init=config.apgd_restarts, batch_size=batch_size,
                        loss_type="difference_logits_ratio", verbose=False)
        return Square(estimator, norm=np.inf, max_iter=config.square_queries, eps=eps,
                      p_init=config.square_p_init, nb_restarts=config.square_restarts,
                      batch_size=batch_size, verbose=False)

    attacks = {name: make(name) for name in run}

    def predict(images):
        return predict_labels(model, images, branch=branch, batch_size=batch_size)

    def logits_of(images):
        return np.concatenate([wrapped(tf.constant(images[a:b])).numpy()
                               for a, b in _batches(len(images), batch_size)])

    x_adv = x.copy()
    robust = predict(x) == y
    after = {"clean": float(robust.mean()) if len(x) else float("nan")}
    broken_by = {}
    one_hot = np.eye(num_classes, dtype=np.float32)

    def attempt(attack, idx, y_attack):
        """Attacks examples ``idx``; keeps the adversarial examples that are valid and wrong."""
        if idx.size == 0:
            return 0
        n_broken = 0
        for a, b in _batches(idx.size, batch_size):
            sel = idx[a:b]
            adv = attack.generate(x=x[sel], y=one_hot[y_attack[sel]]).astype(np.float32)
            dist = np.abs(adv - x[sel]).reshape(len(sel), -1).max(axis=1)
            valid = ((dist <= eps + _NORM_SLACK)
                     & (adv.reshape(len(sel), -1).min(axis=1) >= 0.0)
                     & (adv.reshape(len(sel), -1).max(axis=1) <= 1.0))
            fooled = valid & (predict(adv) != y[sel])
            x_adv[sel[fooled]] = adv[fooled]
            robust[sel[fooled]] = False
            n_broken += int(fooled.sum())
        return n_broken

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        for name in run:
            if name == "apgd-t":
                broken = 0
                # Target order: the k-th highest clean logit among the other classes.
                order = np.argsort(-logits_of(x), axis=1, kind="stable")
                for k in range(1, n_targets + 1):
                    idx = np.flatnonzero(robust)
                    if idx.size == 0:
                        break
                    others = np.array([[c for c in row if c != label]
                                       for row, label in zip(order[idx], y[idx])])
                    targets = np.zeros_like(y)
                    targets[idx] = others[:, k - 1]
                    broken += attempt(attacks[name], idx, targets)
            else:
                broken = attempt(attacks[name], np.flatnonzero(robust), y)
            broken_by[name] = broken
            after[name] = float(robust.mean()) if len(x) else float("nan")
    finally:
        np.random.set_state(state)

    # Re-classify the kept adversarial examples in one pass: an example counts as robust only
    # if the bookkeeping and this fresh look agree (they can differ for examples right on the
    # decision boundary when batch composition changes round-off).
    final = robust & (predict(x_adv) == y)
    settings = {"norm": "Linf", "epsilon": eps, "epsilon_255": eps * 255,
                "attacks_requested": list(config.attacks), "attacks_run": run,
                "attacks_skipped": skipped, "attack_settings": _settings(config, eps, num_classes),
                "bn_mode": "inference", "seed": seed, "art_version": art_version()}
    details = {"robust_accuracy_after": after, "examples_broken_by": broken_by,
               "reclassification_disagreements": int(np.sum(robust != final))}
    return AttackResult.from_mask("autoattack", final, branch, settings, details,
                                  seconds=time.perf_counter() - start)
