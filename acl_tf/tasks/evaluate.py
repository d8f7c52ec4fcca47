"""Robustness evaluation of a saved classifier into a report (``python -m acl_tf.evaluate``)."""

from __future__ import annotations

import datetime

from absl import logging

from acl_tf.configs import EvaluateConfig, to_dict
from acl_tf.core.errors import ConfigError, DataError
from acl_tf.data import load_split
from acl_tf.evaluation.report import write_report
from acl_tf.evaluation.run import environment_info, find_model_file, load_classifier, run_evaluation


def evaluate(model_path, output, config: EvaluateConfig) -> tuple[dict, dict]:
    """Loads the classifier and data of ``config``, evaluates, writes the report files; returns
    the report and the paths written."""
    if not str(output).endswith(".json"):
        raise ConfigError(f"--output must be a .json path (report.md and the plot are written "
                         f"beside it), got {output!r}")
    model_file = find_model_file(model_path)
    model = load_classifier(model_file)
    d = config.data
    data = load_split(d, d.test_split, d.limit)
    if len(data) == 0:
        raise DataError(f"{d.source} [{d.test_split}] has no images to evaluate.")
    logging.info("loaded %d images of %s [%s]; model %s", len(data), d.source, d.test_split,
                 model_file)
    body = run_evaluation(model, data.to_float(), data.labels, config)
    report = {
        "model": str(model_file),
        "data": {"source": d.source, "split": d.test_split, "limit": d.limit,
                 "num_classes": data.num_classes},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": to_dict(config),
        "versions": environment_info(),
        **body,
    }
    return report, write_report(report, output)
