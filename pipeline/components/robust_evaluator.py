"""``RobustEvaluator``: clean / PGD / AutoAttack accuracy of the trained classifier, and its
blessing.

TFMA's Evaluator cannot run adversarial attacks, hence this component. It evaluates
``best.keras`` of the ``AdversarialTrain`` model on the ``test`` split (the first
``data.limit`` images) with :func:`acl_tf.evaluation.run.run_evaluation` (the evaluations the
config lists: ``clean``, ``pgdK``, ``autoattack``; the accuracy-vs-epsilon sweep and the
gradient-masking checks when configured).

Writes a ``ModelEvaluation`` artifact (``report.json``, ``report.md``, and the accuracy plot
when there is a sweep) with every accuracy as a custom property (``clean_accuracy``,
``pgd20_accuracy``, ``autoattack_accuracy``...), and a ``ModelBlessing`` in TFX's Evaluator
convention (a ``BLESSED`` or ``NOT_BLESSED`` file; custom properties ``blessed``,
``current_model``, ``current_model_id``, ``baseline_model``, ``baseline_model_id``), so that
the pusher and TFX's ``LatestBlessedModelStrategy`` understand it.

Blessing rule: ``accuracies[metric] >= threshold`` and, when ``baseline_model`` (the last
blessed model) is given and is another model, ``accuracies[metric] >= baseline's + min_delta``,
the baseline being re-evaluated here with the same attack on the same images.
"""

import dataclasses
import json
import os
from typing import Optional

from absl import logging
from tfx import v1 as tfx

from pipeline.components import artifact_io
from pipeline.components.adversarial_train import classifier_dir

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
REPORT_FILE = "report.json"
BLESSING_FILE = "blessing.json"


def blessing_decision(value: float, threshold: float, baseline: Optional[float] = None,
                      min_delta: float = 0.0) -> tuple[bool, str]:
    """(blessed, reason) for a candidate accuracy ``value`` (see the module docstring)."""
    if value < threshold:
        return False, f"{value:.4f} is below the threshold {threshold:.4f}"
    if baseline is not None and value < baseline + min_delta:
        return False, (f"{value:.4f} does not beat the last blessed model's {baseline:.4f} "
                       f"(+ min_delta {min_delta:g})")
    if baseline is None:
        return True, f"{value:.4f} reaches the threshold {threshold:.4f} (no blessed baseline)"
    return True, (f"{value:.4f} reaches the threshold {threshold:.4f} and the last blessed "
                  f"model's {baseline:.4f} (+ min_delta {min_delta:g})")


def _evaluate(model_dir: str, x, y, config) -> dict:
    from acl_tf.evaluation.run import load_classifier, run_evaluation

    return run_evaluation(load_classifier(model_dir), x, y, config)


def _baseline_config(config, metric: str):
    """Only the blessing metric: no sweep, no checks."""
    return dataclasses.replace(config, attacks=(metric,), eps_sweep=(),
                               guards=dataclasses.replace(config.guards, enabled=False))


@tfx.dsl.components.component
def RobustEvaluator(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    config_json: tfx.dsl.components.Parameter[str],
    metric: tfx.dsl.components.Parameter[str],
    threshold: tfx.dsl.components.Parameter[float],
    min_delta: tfx.dsl.components.Parameter[float] = 0.0,
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
) -> None:
    """Evaluates robustness and decides the blessing.

    Args:
        model: the ``AdversarialTrain`` run directory (``best.keras``).
        examples: ``Examples`` with a ``test`` split.
        evaluation: receives ``report.json`` / ``report.md``.
        blessing: receives ``BLESSED`` or ``NOT_BLESSED`` and ``blessing.json``.
        config_json: an :class:`acl_tf.configs.EvaluateConfig` as JSON.
        metric: the evaluation deciding the blessing (``pgd20``, ``clean``, ``autoattack``...).
        threshold: minimum value of ``metric``.
        min_delta: how much ``metric`` must exceed the baseline's (0: not worse).
        baseline_model: the last blessed model, if any (from the pipeline's resolver).
    """
    from acl_tf.configs import EvaluateConfig
    from acl_tf.evaluation.report import write_report
    from pipeline.config import config_from_json

    config = config_from_json(EvaluateConfig, config_json)
    metric = metric.strip().lower()
    with artifact_io.local_input(examples.uri) as examples_dir:
        test = artifact_io.load_split(examples, examples_dir, config.data.test_split,
                                      config.data, limit=config.data.limit)
    if len(test) == 0:
        raise ValueError(f"the {config.data.test_split!r} split of {examples.uri} is empty")
    x, y = test.to_float(), test.labels
    with artifact_io.local_input(model.uri) as model_dir:
        report = _evaluate(classifier_dir(model, model_dir), x, y, config)
    accuracies = report["accuracies"]
    if metric not in accuracies:
        raise ValueError(f"blessing metric {metric!r} was not evaluated (evaluations: "
                         f"{sorted(accuracies)}); add it to the evaluate config's attacks.")

    baseline_value = None
    same_model = baseline_model is not None and (
        baseline_model.uri == model.uri or (baseline_model.id and baseline_model.id == model.id))
    if baseline_model is not None and not same_model:
        with artifact_io.local_input(baseline_model.uri) as baseline_dir:
            baseline_report = _evaluate(classifier_dir(baseline_model, baseline_dir), x, y,
                                        _baseline_config(config, metric))
        baseline_value = float(baseline_report["accuracies"][metric])
    blessed, reason = blessing_decision(float(accuracies[metric]), threshold, baseline_value,
                                        min_delta)
    logging.info("robust evaluation on %d images: %s; %s: %s", len(x),
                 ", ".join(f"{k} {v:.4f}" for k, v in accuracies.items()),
                 "BLESSED" if blessed else "NOT BLESSED", reason)

    decision = {"blessed": blessed, "reason": reason, "metric": metric, "value": accuracies[metric],
                "threshold": threshold, "min_delta": min_delta, "baseline_value": baseline_value,
                "current_model": model.uri,
                "baseline_model": baseline_model.uri if baseline_model is not None else None}
    report = {**report, "model": model.uri, "blessing": decision}
    with artifact_io.local_output(evaluation.uri) as evaluation_dir:
        write_report(report, os.path.join(evaluation_dir, REPORT_FILE))
    for name, value in accuracies.items():
        evaluation.set_float_custom_property(f"{name}_accuracy", float(value))
    evaluation.set_int_custom_property("num_examples", int(report["num_examples"]))
    evaluation.set_string_custom_property("branch", str(report["branch"]))

    with artifact_io.local_output(blessing.uri) as blessing_dir:
        with open(os.path.join(blessing_dir, BLESSED_FILE if blessed else NOT_BLESSED_FILE),
                  "w"):
            pass
        with open(os.path.join(blessing_dir, BLESSING_FILE), "w") as f:
            json.dump(decision, f, indent=2)
            f.write("\n")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", int(model.id or 0))
    if baseline_model is not None:
        blessing.set_string_custom_property("baseline_model", baseline_model.uri)
        blessing.set_int_custom_property("baseline_model_id", int(baseline_model.id or 0))
    blessing.set_string_custom_property("metric", metric)
    blessing.set_float_custom_property("metric_value", float(accuracies[metric]))
    blessing.set_string_custom_property("reason", reason)
