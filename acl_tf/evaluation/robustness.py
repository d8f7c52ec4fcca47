"""Clean and PGD accuracy of a classifier, and robust accuracy as a function of epsilon.

Every attack runs with BN in inference mode (``training=False``) on one BN branch, batch by batch,
through :func:`acl_tf.attacks.pgd_linf` maximising the cross-entropy of the true label.

The model is anything called as ``model(images, training=False, branch=branch)`` that returns
logits, e.g. :class:`acl_tf.models.Classifier`; images are float32 ``[N, H, W, 3]`` in [0, 1].

Counting rule for PGD with restarts: an example is *robust* only if it is classified correctly
on the clean image **and** on the adversarial image of every restart (the clean image is a point
of the epsilon-ball too, and this is also how AutoAttack counts). The per-restart accuracies are
reported alongside so that the effect of restarts is visible.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from acl_tf.attacks import PGDConfig, model_loss_fn, pgd_linf
from acl_tf.losses import cross_entropy

__all__ = ["AttackResult", "resolve_branch", "predict_labels", "clean_accuracy", "pgd_correct",
           "pgd_accuracy", "accuracy_vs_epsilon", "sweep_config"]

# Stateless seeds are (seed, stream); the stream separates restarts and batches.
_RESTART_STRIDE = 1_000_003


@dataclasses.dataclass
class AttackResult:
    """Outcome of one evaluation.

    Attributes:
        name: e.g. ``clean``, ``pgd20``, ``autoattack``.
        accuracy: fraction of examples counted correct (robust), in [0, 1].
        num_correct: number of such examples.
        num_examples: number of examples evaluated.
        branch: the BN branch the model ran on.
        settings: the attack's settings (JSON-able).
        details: extra per-attack figures (per-restart accuracies, AutoAttack stages, ...).
        seconds: wall-clock time of the evaluation.
    """

    name: str
    accuracy: float
    num_correct: int
    num_examples: int
    branch: Optional[str]
    settings: dict = dataclasses.field(default_factory=dict)
    details: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_mask(cls, name, correct, branch, settings=None, details=None, seconds=0.0):
        correct = np.asarray(correct, dtype=bool)
        n = int(correct.size)
        return cls(name=name, accuracy=float(correct.mean()) if n else float("nan"),
                   num_correct=int(correct.sum()), num_examples=n, branch=branch,
                   settings=dict(settings or {}), details=dict(details or {}), seconds=seconds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_branch(model, branch: Optional[str]) -> Optional[str]:
    """The BN branch actually used: ``branch``, else the model's own default (``model.branch``)."""
    if branch is not None:
        from acl_tf.models.dual_bn import check_branch

        return check_branch(branch)
    return getattr(model, "branch", None)


def _check_inputs(x, y):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be a batch [N, H, W, 3], got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images must be float in [0, 1] (convert uint8 with / 255), got "
                         f"dtype {x.dtype}.")
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"image values must lie in [0, 1], got range [{np.nanmin(x):.4g}, "
                         f"{np.nanmax(x):.4g}].")
    if y.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}.")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


# Compiled functions per model and key, so repeated evaluations trace once. The model is held
# weakly (the functions reach it through a weak reference), so the cache never keeps it alive.
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(model, key, build: Callable[[Callable], Callable]) -> Callable:
    """``build(get_model)`` -> tf.function, cached per (model, key)."""
    try:
        ref = weakref.ref(model)
        cache = _COMPILED.setdefault(model, {})
    except TypeError:   # not weak-referenceable: compile afresh
        return build(lambda: model)
    if key not in cache:
        cache[key] = build(ref)
    return cache[key]


def predict_labels(model, x, *, branch: Optional[str] = None, batch_size: int = 256) -> np.ndarray:
    """Arg-max predictions ``[N]`` (int64) with BN in inference mode on ``branch``."""
    batch_size = _check_batch_size(batch_size)
    x = np.asarray(x, dtype=np.float32)

    def build(get_model):
        @tf.function(reduce_retracing=True)
        def predict(images):
            return tf.argmax(get_model()(images, training=False, branch=branch), axis=-1)

        return predict

    predict = _compiled(model, ("predict", branch), build)
    out = [predict(tf.constant(x[a:b])).numpy() for a, b in _batches(len(x), batch_size)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros([0], np.int64)


def clean_accuracy(model, x, y, *, branch: Optional[str] = None,
                   batch_size: int = 256) -> AttackResult:
    """Accuracy on unperturbed images."""
    x, y = _check_inputs(x, y)
    branch = resolve_branch(model, branch)
    start = time.perf_counter()
    correct = predict_labels(model, x, branch=branch, batch_size=batch_size) == y
    return AttackResult.from_mask("clean", correct, branch, seconds=time.perf_counter() - start)


def _pgd_settings(config: PGDConfig, restarts: int, seed: int) -> dict:
    return {"norm": "Linf", "epsilon": config.epsilon, "epsilon_255": config.epsilon * 255,
            "step_size": config.step_size, "step_size_255": config.step_size * 255,
            "steps": config.steps, "random_start": config.random_start, "restarts": restarts,
            "loss": "cross_entropy", "bn_mode": "inference", "seed": seed}


def pgd_correct(model, x, y, config: PGDConfig, *, restarts: int = 1,
                branch: Optional[str] = None, batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """Per-restart correctness of PGD examples: bool ``[restarts, N]``.

    Restart ``r`` of batch ``b`` starts from the stateless seed ``(seed, r * 1000003 + b)``, so
    results are reproducible and restarts draw different random starts.
    """
    x, y = _check_inputs(x, y)
    batch_size = _check_batch_size(batch_size)
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}.")
    if config.random_start == "none" and restarts > 1:
        raise ValueError("restarts > 1 needs a random start (random_start='none' would repeat "
                         "the same attack).")

    def build(get_model):
        @tf.function(reduce_retracing=True)
        def attack(images, labels, attack_seed):
            def ce(logits):
                return cross_entropy(labels, logits, "sum")

            net = get_model()
            x_adv = pgd_linf(model_loss_fn(net, ce, branch=branch), images, config,
                             seed=attack_seed)
            logits = net(x_adv, training=False, branch=branch)
            return tf.equal(tf.argmax(logits, axis=-1), labels)

        return attack

    attack = _compiled(model, ("pgd", branch, config), build)

    correct = np.zeros([restarts, len(x)], dtype=bool)
    for r in range(restarts):
        for b, (lo, hi) in enumerate(_batches(len(x), batch_size)):
            attack_seed = tf.constant([seed, r * _RESTART_STRIDE + b], tf.int64)
            correct[r, lo:hi] = attack(tf.constant(x[lo:hi]), tf.constant(y[lo:hi]),
                                       attack_seed).numpy()
    return correct


def pgd_accuracy(model, x, y, config: PGDConfig, *, restarts: int = 1,
                 branch: Optional[str] = None, batch_size: int = 256, seed: int = 0,
                 name: Optional[str] = None) -> AttackResult:
    """Robust accuracy under L-inf PGD (an example counts only if it survives every restart and
    is classified correctly when clean)."""
    x, y = _check_inputs(x, y)
    branch = resolve_branch(model, branch)
    start = time.perf_counter()
    clean = predict_labels(model, x, branch=branch, batch_size=batch_size) == y
    per_restart = pgd_correct(model, x, y, config, restarts=restarts, branch=branch,
                              batch_size=batch_size, seed=seed)
    robust = clean & per_restart.all(axis=0)
    details = {"per_restart_accuracy": [float(c.mean()) if c.size else float("nan")
                                        for c in per_restart],
               "clean_accuracy": float(clean.mean()) if clean.size else float("nan")}
    return AttackResult.from_mask(name or f"pgd{config.steps}", robust, branch,
                                  _pgd_settings(config, restarts, seed), details,
                                  seconds=time.perf_counter() - start)


def sweep_config(epsilon: float, *, steps: int = 20, step_ratio: float = 0.25,
                 random_start: str = "uniform") -> PGDConfig:
    """The PGD settings used at ``epsilon`` in a sweep: step size ``step_ratio * epsilon`` (2/255
    at 8/255 with the default 0.25), so every epsilon gets the same number of steps across the
    ball; epsilon 0 gives the clean accuracy."""
    if step_ratio <= 0:
        raise ValueError(f"step_ratio must be positive, got {step_ratio}.")
    if epsilon == 0:
        return PGDConfig(epsilon=0.0, step_size=0.0, steps=0, random_start="none")
    return PGDConfig(epsilon=float(epsilon), step_size=float(step_ratio * epsilon), steps=steps,
                     random_start=random_start)


def accuracy_vs_epsilon(model, x, y, epsilons: Sequence[float], *, steps: int = 20,
                        step_ratio: float = 0.25, restarts: int = 1,
                        branch: Optional[str] = None, batch_size: int = 256,
                        seed: int = 0) -> list[AttackResult]:
    """PGD robust accuracy at each epsilon (pixel units of [0, 1]), in increasing order of epsilon.

    Each result's ``settings`` hold that point's PGD settings (see :func:`sweep_config`).
    """
    epsilons = sorted({float(e) for e in epsilons})
    if any(e < 0 for e in epsilons):
        raise ValueError(f"epsilons must be >= 0, got {epsilons}.")
    results = []
    for eps in epsilons:
        config = sweep_config(eps, steps=steps, step_ratio=step_ratio)
        results.append(pgd_accuracy(model, x, y, config,
                                    restarts=restarts if eps > 0 else 1, branch=branch,
                                    batch_size=batch_size, seed=seed,
                                    name=f"pgd{config.steps}@{eps * 255:g}/255"))
    return results
