"""Accuracy under common corruptions: CIFAR-10-C (Hendrycks & Dietterich, 2019).

The data come from TensorFlow Datasets' ``cifar10_corrupted``, one builder config per
corruption and severity (``<corruption>_<severity>``, e.g. ``gaussian_noise_3``), each holding
the 10,000 CIFAR-10 test images corrupted that way (split ``test``). 19 corruptions x 5
severities = 95 configs, about 2.9 GB. Prepare them once where the download host is reachable
(``tfds.load("cifar10_corrupted/brightness_1", data_dir=D, download=True)`` for each config, or
``tfds build cifar10_corrupted --data_dir=D``), then pass ``data_dir=D``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np

from acl_tf.configs import (  # noqa: F401 (re-exported)
    CIFAR10C_CORRUPTIONS,
    CIFAR10C_SEVERITIES,
    Cifar10CConfig,
)
from acl_tf.evaluation.robustness import predict_labels, resolve_branch

__all__ = ["CIFAR10C_CORRUPTIONS", "CIFAR10C_SEVERITIES", "Cifar10CConfig", "cifar10c_name",
           "evaluate_cifar10c"]

TFDS_NAME = "cifar10_corrupted"
def cifar10c_name(corruption: str, severity: int) -> str:
    """The TFDS name of one config, e.g. ``cifar10_corrupted/fog_3``."""
    return f"{TFDS_NAME}/{corruption}_{severity}"


def evaluate_cifar10c(model, config: Cifar10CConfig = Cifar10CConfig(), *,
                      branch: Optional[str] = None, batch_size: int = 256) -> dict:
    """Clean accuracy of ``model`` on every requested CIFAR-10-C config.

    Returns a JSON-able dict: ``accuracy[corruption][str(severity)]``, ``mean`` (over all
    configs evaluated), ``mean_by_corruption``, ``mean_by_severity``, ``num_examples`` (per config),
    ``branch``, ``settings`` and ``seconds``.

    Raises:
        acl_tf.data.DataError: a config is not prepared in ``data_dir`` and ``download`` is off.
    """
    from acl_tf.data import DataError, load

    branch = resolve_branch(model, branch)
    start = time.perf_counter()
    accuracy: dict = {}
    counts = {}
    for corruption in config.corruptions:
        accuracy[corruption] = {}
        for severity in config.severities:
            name = cifar10c_name(corruption, severity)
            try:
                data = load(name, split="test", data_dir=config.data_dir,
                            download=config.download, limit=config.limit)
            except DataError as err:
                raise DataError(f"CIFAR-10-C config {name!r} could not be loaded: {err}. "
                                f"Prepare {TFDS_NAME} in a TFDS data_dir (see docs/evaluation.md)"
                                " and pass it (--cifar10c_data_dir), or allow downloading."
                                ) from None
            if len(data) == 0:
                raise DataError(f"CIFAR-10-C config {name!r} has no test images.")
            pred = predict_labels(model, data.to_float(), branch=branch, batch_size=batch_size)
            accuracy[corruption][str(severity)] = float(np.mean(pred == data.labels))
            counts[f"{corruption}_{severity}"] = len(data)
    flat = [a for by_sev in accuracy.values() for a in by_sev.values()]
    return {
        "accuracy": accuracy,
        "mean": float(np.mean(flat)),
        "mean_by_corruption": {c: float(np.mean(list(v.values()))) for c, v in accuracy.items()},
        "mean_by_severity": {str(s): float(np.mean([accuracy[c][str(s)] for c in accuracy]))
                             for s in config.severities},
        "num_examples": counts,
        "branch": branch,
        "settings": dataclasses.asdict(config),
        "seconds": time.perf_counter() - start,
    }

