"""pipeline/components/robust_evaluator.py: the blessing rule, the evaluator's figures against the
library's, and the comparison with a baseline model."""

import json
import os

import pytest

pytest.importorskip("tfx.v1")

from pipeline_helpers import evaluate_model  # noqa: E402

from pipeline.components.robust_evaluator import blessing_decision  # noqa: E402


@pytest.mark.parametrize("value,threshold,baseline,delta,blessed,reason", [
    (0.50, 0.45, None, 0.0, True, "no blessed baseline"),
    (0.40, 0.45, None, 0.0, False, "below the threshold"),
    (0.50, 0.45, 0.50, 0.0, True, "last blessed model's 0.5000"),
    (0.50, 0.45, 0.51, 0.0, False, "does not beat"),
    (0.50, 0.45, 0.49, 0.02, False, "does not beat"),
    (0.52, 0.45, 0.49, 0.02, True, "min_delta 0.02"),
])
def test_blessing_decision(value, threshold, baseline, delta, blessed, reason):
    result, why = blessing_decision(value, threshold, baseline, delta)
    assert result is blessed and reason in why


def test_robust_evaluator_figures_and_blessing(components_work, components_finetuned, tmp_path):
    from acl_tf.evaluation.robustness import clean_accuracy
    from acl_tf.evaluation.run import load_classifier

    evaluation, blessing = evaluate_model(components_work, components_finetuned, tmp_path / "pass")
    report = json.load(open(os.path.join(evaluation.uri, "report.json")))
    test = components_work["test_data"]
    expected = clean_accuracy(load_classifier(components_finetuned.uri), test.to_float(),
                              test.labels)
    assert report["num_examples"] == 16
    assert evaluation.get_float_custom_property("clean_accuracy") == pytest.approx(
        expected.accuracy)
    assert evaluation.get_float_custom_property("pgd2_accuracy") == pytest.approx(
        report["accuracies"]["pgd2"])
    assert report["accuracies"]["pgd2"] <= report["accuracies"]["clean"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.isfile(os.path.join(blessing.uri, "BLESSED"))
    assert blessing.get_string_custom_property("current_model") == components_finetuned.uri

    _, refused = evaluate_model(components_work, components_finetuned, tmp_path / "fail",
                                threshold=1.0)
    assert refused.get_int_custom_property("blessed") == 0
    assert os.path.isfile(os.path.join(refused.uri, "NOT_BLESSED"))
    assert "below the threshold" in refused.get_string_custom_property("reason")


def test_robust_evaluator_compares_with_the_baseline(components_work, components_finetuned,
                                                     components_student, tmp_path):
    _, student = components_student
    # Another model as baseline: it is evaluated; no model beats another by a whole 100%.
    _, blessing = evaluate_model(components_work, components_finetuned, tmp_path / "other",
                                 baseline=student, min_delta=1.0)
    assert blessing.get_int_custom_property("blessed") == 0
    assert "does not beat the last blessed model" in blessing.get_string_custom_property("reason")
    assert blessing.get_string_custom_property("baseline_model") == student.uri
    # The candidate itself as baseline (LatestBlessedModelStrategy on a re-run): not compared.
    _, again = evaluate_model(components_work, components_finetuned, tmp_path / "self",
                              baseline=components_finetuned, min_delta=1.0)
    assert again.get_int_custom_property("blessed") == 1
    assert json.load(open(os.path.join(again.uri, "blessing.json")))["baseline_value"] is None
