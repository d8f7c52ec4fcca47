"""Robustness evaluation of a saved classifier into a report (``python -m acl_tf.evaluate``)."""

from __future__ import annotations

import datetime

from absl import logging

from acl_tf.configs import EvaluateConfig, to_dict
from acl_tf.core.errors import ConfigError, DataError
from acl_tf.evaluation.report import write_report
from acl_tf.evaluation.run import environment_info, find_model_file, load_classifier, run_evaluation
from acl_tf.evaluation.subset import describe_subset, load_limited


def evaluate(model_path, output, config: EvaluateConfig) -> tuple[dict, dict]:
    """Loads the classifier and data of ``config``, evaluates, writes the report files; returns
    the report and the paths written."""
    if not str(output).endswith(".json"):
        raise ConfigError(f"--output must be a .json path (report.md and the plot are written "
                         f"beside it), got {output!r}")
    model_file = find_model_file(model_path)
    model = load_classifier(model_file)
    d = config.data
    # data.limit: a class-balanced subset unless config.subset is "first" (acl_tf.evaluation.subset)
    data = load_limited(d.source, d.test_split, d.limit, config.subset, data_dir=d.data_dir,
                        download=d.download, image_size=d.image_size, num_classes=d.num_classes)
    if len(data) == 0:
        raise DataError(f"{d.source} [{d.test_split}] has no images to evaluate.")
    subset = describe_subset(data, d.limit, config.subset)
    logging.info("loaded %d images of %s [%s] (%s, per class %s); model %s", len(data),
                 d.source, d.test_split, subset["subset"], subset["class_counts"], model_file)
    body = run_evaluation(model, data.to_float(), data.labels, config)
    report = {
        "model": str(model_file),
        "data": {"source": d.source, "split": d.test_split, "num_classes": data.num_classes,
                 **subset},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": to_dict(config),
        "versions": environment_info(),
        **body,
    }
    return report, write_report(report, output)
