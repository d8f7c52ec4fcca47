"""A whole robustness evaluation driven by an :class:`acl_tf.configs.EvaluateConfig`.

:func:`run_evaluation` runs the requested attacks (``clean``, ``pgdK``, ``autoattack``,
``corruptions``), the accuracy-vs-epsilon sweep and the gradient-masking checks on one BN branch
and returns a JSON-able report; :func:`load_classifier` finds and loads the classifier of a
fine-tuning run. ``python -m acl_tf.evaluate`` is the command line around them.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import logging

from acl_tf.configs import parse_attack_name
from acl_tf.core import run_dir as rd
from acl_tf.core.errors import EvaluationError  # noqa: F401 (re-exported)
from acl_tf.evaluation import guards as guard_lib
from acl_tf.evaluation.autoattack import art_version, autoattack_accuracy
from acl_tf.evaluation.corruptions import evaluate_cifar10c
from acl_tf.evaluation.robustness import (
    accuracy_vs_epsilon,
    clean_accuracy,
    pgd_accuracy,
    resolve_branch,
    sweep_config,
)

__all__ = ["EvaluationError", "MODEL_FILES", "parse_attack_name", "find_model_file",
           "load_classifier", "run_evaluation", "environment_info", "describe_attack"]

MODEL_FILES = (rd.BEST,)


def find_model_file(path) -> Path:
    """``path`` itself if it is a ``.keras`` file, else ``path/best.keras`` of a run directory."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.glob("*.keras"))
        raise EvaluationError(f"{path} has no {' or '.join(MODEL_FILES)} (a fine-tuning run "
                              f"directory); .keras files there: {found or 'none'}. Pass the "
                              "model file itself to evaluate another one.")
    if not path.exists():
        raise EvaluationError(f"no such model file or run directory: {path}")
    if path.suffix != ".keras":
        raise EvaluationError(f"{path} is not a .keras file (a SavedModel directory cannot be "
                              "evaluated here: pass the run directory or its best.keras).")
    return path


def load_classifier(path):
    """Loads a fine-tuned :class:`acl_tf.models.Classifier` from a ``.keras`` file or run dir."""
    import keras

    import acl_tf.models  # noqa: F401  (registers the acl_tf classes with Keras)
    from acl_tf.models import Classifier

    file = find_model_file(path)
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as err:  # Keras raises many types for unreadable archives.
        raise EvaluationError(f"cannot load {file}: {err}") from err
    if not isinstance(model, Classifier):
        raise EvaluationError(f"{file} holds a {type(model).__name__}, not a Classifier (an "
                              "encoder from pre-training? fine-tune it first: python -m "
                              "acl_tf.finetune).")
    return model


def describe_attack(result: dict) -> str:
    """One line naming an attack as run, with its settings."""
    s = result["settings"]
    if result["name"] == "clean":
        return "clean (no perturbation)"
    if result["name"] == "autoattack":
        run = ", ".join(s["attacks_run"])
        skipped = "; ".join(f"{a} skipped: {why}" for a, why in s["attacks_skipped"].items())
        return (f"autoattack Linf eps {s['epsilon_255']:g}/255: {run}"
                + (f" ({skipped})" if skipped else ""))
    return (f"{result['name']}: PGD Linf eps {s['epsilon_255']:g}/255, step "
            f"{s['step_size_255']:g}/255, {s['steps']} steps, {s['random_start']} start, "
            f"{s['restarts']} restart(s), CE loss")


def environment_info() -> dict:
    """Versions of everything that can change the figures."""
    import keras
    import tensorflow as tf

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "adversarial_robustness_toolbox": art_version(),
            "devices": [d.name for d in tf.config.list_logical_devices()]}
    try:
        import tensorflow_datasets as tfds

        info["tensorflow_datasets"] = tfds.__version__
    except ImportError:
        info["tensorflow_datasets"] = None
    try:
        root = Path(__file__).resolve().parents[2]
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def run_evaluation(model, x, y, config) -> dict:
    """Runs the evaluation ``config`` (an ``EvaluateConfig``) on images ``x`` (float32 [N, H, W,
    3] in [0, 1]) with labels ``y``; returns the JSON-able report body.

    The accuracy-vs-epsilon sweep and the gradient-masking checks run only when a robust attack
    (``pgdK`` or ``autoattack``) is requested.

    Keys: ``branch``, ``num_examples``, ``attacks`` (results of the requested attacks, in order),
    ``attacks_run`` (one line each), ``accuracies`` (name -> accuracy), ``accuracy_vs_epsilon``,
    ``guard_runs`` (extra PGD runs made for the checks), ``guards``, ``corruptions``, ``seconds``.
    """
    start = time.perf_counter()
    branch = resolve_branch(model, config.bn)
    common = dict(branch=branch, batch_size=config.batch_size)
    requested = [(name, *parse_attack_name(name)) for name in config.attacks]
    results, pgd_by_steps, corruptions = [], {}, None
    for name, kind, steps in requested:
        logging.info("evaluating %s on %d images (BN branch %s)", name, len(x), branch)
        if kind == "clean":
            results.append(clean_accuracy(model, x, y, **common))
        elif kind == "pgd":
            attack = dataclasses.replace(config.attack, steps=steps)
            result = pgd_accuracy(model, x, y, attack, restarts=config.restarts,
                                  seed=config.seed, **common)
            results.append(result)
            pgd_by_steps[steps] = result.accuracy
        elif kind == "autoattack":
            results.append(autoattack_accuracy(model, x, y, config.attack.epsilon,
                                               config.autoattack, seed=config.seed, **common))
        else:
            corruptions = evaluate_cifar10c(model, config.cifar10c, **common)
        if kind != "corruptions":
            logging.info("%s accuracy: %.2f%% (%.1f s)", name, 100 * results[-1].accuracy,
                         results[-1].seconds)
    accuracies = {r.name: r.accuracy for r in results}
    if corruptions is not None:
        accuracies["cifar10c_mean"] = corruptions["mean"]

    # The sweep and the checks are about robust accuracy: they run with a pgdK or autoattack.
    robust_requested = any(kind in ("pgd", "autoattack") for _, kind, _ in requested)
    guards_config = config.guards
    large_eps = guards_config.large_epsilon
    sweep = []
    if config.eps_sweep and robust_requested:
        epsilons = set(config.eps_sweep)
        if guards_config.enabled:
            epsilons.add(large_eps)
        logging.info("accuracy vs epsilon at %s/255", [f"{e * 255:g}" for e in sorted(epsilons)])
        sweep = accuracy_vs_epsilon(model, x, y, sorted(epsilons), steps=config.sweep_steps,
                                    step_ratio=config.sweep_step_ratio,
                                    restarts=config.restarts, seed=config.seed, **common)

    guard_runs, guard_results = [], []
    if guards_config.enabled and robust_requested:
        steps_acc = dict(pgd_by_steps)
        for steps in guards_config.steps:
            if steps not in steps_acc:
                attack = dataclasses.replace(config.attack, steps=steps)
                run = pgd_accuracy(model, x, y, attack, restarts=config.restarts,
                                   seed=config.seed, name=f"pgd{steps} (steps check)", **common)
                guard_runs.append(run)
                steps_acc[steps] = run.accuracy
        guard_results.append(guard_lib.steps_guard(steps_acc, guards_config.tolerance))
        by_eps = {r.settings["epsilon"]: r.accuracy for r in sweep}
        guard_results.append(guard_lib.epsilon_guard(by_eps, guards_config.tolerance))
        large_acc = next((a for e, a in by_eps.items() if abs(e - large_eps) < 1e-12), None)
        if large_acc is None:
            run = pgd_accuracy(model, x, y, sweep_config(large_eps, steps=config.sweep_steps,
                                                         step_ratio=config.sweep_step_ratio),
                               restarts=config.restarts, seed=config.seed,
                               name=f"pgd{config.sweep_steps}@{large_eps * 255:g}"
                                    "/255 (large-epsilon check)", **common)
            guard_runs.append(run)
            large_acc = run.accuracy
        guard_results.append(guard_lib.large_epsilon_guard(
            large_eps, large_acc, guards_config.large_epsilon_max_accuracy))
        aa = accuracies.get("autoattack")
        guard_results.append(guard_lib.autoattack_vs_pgd_guard(
            aa, {f"pgd{k}": v for k, v in steps_acc.items()}, guards_config.tolerance))
        for g in guard_results:
            (logging.warning if g.status == guard_lib.WARN else logging.info)(
                "check %s: %s: %s", g.name, g.status, g.message)

    attack_dicts = [r.to_dict() for r in results]
    return {
        "branch": branch,
        "num_examples": int(len(x)),
        "attacks": attack_dicts,
        "attacks_run": [describe_attack(r) for r in attack_dicts]
                       + (["corruptions: CIFAR-10-C clean accuracy"] if corruptions else []),
        "accuracies": accuracies,
        "accuracy_vs_epsilon": [
            {"epsilon": r.settings["epsilon"], "epsilon_255": r.settings["epsilon_255"],
             "accuracy": r.accuracy, "steps": r.settings["steps"],
             "step_size_255": r.settings["step_size_255"],
             "restarts": r.settings["restarts"]} for r in sweep],
        "guard_runs": [r.to_dict() for r in guard_runs],
        "guards": [g.to_dict() for g in guard_results],
        "corruptions": corruptions,
        "seconds": time.perf_counter() - start,
    }
