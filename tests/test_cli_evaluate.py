"""``acl-tf evaluate`` (acl_tf.cli.evaluate) and its limited subsets: a class-balanced ``--limit``
on a class-sorted test file (every class measured, the counts reported), epsilons in one unit
(``8/255`` in configs, ``--set`` and flags; the deprecated 1/255 fields converted), the report,
its markdown and plot, and the exit status of a bad model path."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import make_tiny_classifier

from acl_tf.configs import ConfigError, EvaluateConfig, load_config
from acl_tf.data import ImageData, load, write_tfrecord
from acl_tf.evaluation.subset import balanced_indices, class_counts, limit_images


@pytest.fixture(scope="module")
def sorted_test_dir(tmp_path_factory):
    """The shipped sample's 200 test images reordered by class (as CIFAR-10's test TFRecord is):
    ``DIR/test.tfrecord``."""
    root = tmp_path_factory.mktemp("sorted")
    data = load("sample:cifar10", split="test")
    write_tfrecord(root / "test.tfrecord", data.take(np.argsort(data.labels, kind="stable")))
    return root


def test_a_limit_is_class_balanced_unless_first_is_asked():
    labels = np.repeat(np.arange(10), 20)                 # sorted by class, 20 of each
    data = ImageData(np.zeros((200, 2, 2, 3), np.uint8), labels, labels.astype(str), 10)
    first = limit_images(data, 20, "first")
    assert class_counts(first.labels, 10) == [20] + [0] * 9       # airplanes only
    balanced = limit_images(data, 20)
    assert class_counts(balanced.labels, 10) == [2] * 10
    assert list(limit_images(data, 20).ids) == list(balanced.ids)  # deterministic
    assert list(balanced.ids) == sorted(balanced.ids, key=int)     # kept in file order
    # N not a multiple of the classes: N // 10 of each, the rest one each to distinct classes.
    counts = class_counts(limit_images(data, 25).labels, 10)
    assert sum(counts) == 25 and sorted(counts) == [2] * 5 + [3] * 5
    assert limit_images(data, 500) is data and limit_images(data, None) is data
    # The draw fine-tuning's test_limit makes, for a multiple of the classes.
    from acl_tf.data import class_balanced_indices

    np.testing.assert_array_equal(balanced_indices(labels, 50, 10), class_balanced_indices(
        labels, per_class=5, num_classes=10, seed=0))
    with pytest.raises(ValueError, match="class-balanced subset of 60 images needs 30 of each of the 2 classes"):
        balanced_indices(np.array([0] * 100 + [1] * 3), 60, 2)


def test_epsilons_in_pixel_units_and_the_deprecated_1_255_fields(tmp_path, caplog):
    config = load_config(EvaluateConfig, "evaluate", "smoke",
                         ["attack.epsilon=8/255", "attack.step_size=2 / 255",
                          "eps_sweep=[0, 4/255, 0.0314]"])
    assert config.attack.epsilon == 8 / 255 and config.attack.step_size == 2 / 255
    assert config.eps_sweep == (0.0, 4 / 255, 0.0314)
    file = tmp_path / "eval.yaml"
    file.write_text("attack:\n  epsilon: 8/255\nguards:\n  large_epsilon: 32/255\n")
    config = load_config(EvaluateConfig, "evaluate", str(file))
    assert config.attack.epsilon == 8 / 255 and config.guards.large_epsilon == 32 / 255
    with pytest.raises(ConfigError, match="attack.epsilon must be in"):
        load_config(EvaluateConfig, "evaluate", "smoke", ["attack.epsilon=8"])

    with caplog.at_level(logging.WARNING):
        config = load_config(EvaluateConfig, "evaluate", "smoke",
                             ["eps_sweep_255=[0, 8]", "guards.large_epsilon_255=32"])
    assert config.eps_sweep == (0.0, 8 / 255) and config.eps_sweep_255 is None
    assert config.guards.large_epsilon == 32 / 255 and config.guards.large_epsilon_255 is None
    messages = [r.getMessage() for r in caplog.records]
    assert "config field eps_sweep_255 is deprecated (1/255 units); use eps_sweep in fractions " \
           "of the [0, 1] pixel range: eps_sweep=[0, 8/255]" in messages
    assert any("guards.large_epsilon=32/255" in m for m in messages)
    # the resolved config (a run's config.json) holds the new fields only
    assert load_config(EvaluateConfig, "evaluate", "smoke", ["eps_sweep_255=[]"]).eps_sweep == ()


def test_evaluate_reports_the_images_of_every_class(sorted_test_dir, tmp_path):
    from acl_tf.tasks.evaluate import evaluate

    model = tmp_path / "best.keras"
    make_tiny_classifier(seed=2).save(model)
    config = load_config(EvaluateConfig, "evaluate", "smoke",
                         [f"data.source={sorted_test_dir}", "data.limit=30", "attacks=[clean]"])
    report, files = evaluate(model, tmp_path / "report.json", config)
    assert report["data"]["class_counts"] == [3] * 10 and report["data"]["subset"] == "balanced"
    assert report["num_examples"] == 30 and report["data"]["limit"] == 30
    assert json.loads((tmp_path / "report.json").read_text())["data"] == report["data"]
    assert "30 images (class-balanced subset, limit 30): 3 per class" in (
        tmp_path / "report.md").read_text()

    first = load_config(EvaluateConfig, "evaluate", "smoke",
                        [f"data.source={sorted_test_dir}", "data.limit=30", "attacks=[clean]",
                         "subset=first"])
    report, _ = evaluate(model, tmp_path / "first" / "report.json", first)
    assert report["data"]["class_counts"] == [20, 10] + [0] * 8
    assert "per class 0:20 1:10 2:0" in (tmp_path / "first" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_cli_on_a_class_sorted_sample(tmp_path, sorted_test_dir, project_root):
    from acl_tf.evaluation.robustness import predict_labels

    classifier = make_tiny_classifier(seed=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    classifier.save(run_dir / "best.keras")
    output = tmp_path / "eval" / "report.json"
    cmd = [sys.executable, "-m", "acl_tf.evaluate", f"--model={run_dir}", "--config=smoke",
           f"--data={sorted_test_dir}", "--limit=20", "--attacks=clean,pgd3", "--bn=normal",
           "--epsilon_sweep=0,8/255,64/255", f"--output={output}"]
    proc = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{sorted_test_dir} [test]: 20 images (class-balanced subset, limit 20): 2 per " \
           "class" in proc.stdout

    report = json.loads(output.read_text())
    assert report["model"] == str(run_dir / "best.keras")
    assert report["branch"] == "normal" and report["num_examples"] == 20
    assert report["data"]["class_counts"] == [2] * 10
    assert [a["name"] for a in report["attacks"]] == ["clean", "pgd3"]
    assert report["attacks_run"][1].startswith("pgd3: PGD Linf eps 8/255, step 2/255, 3 steps")
    assert report["settings"]["data"]["limit"] == 20
    assert report["versions"]["tensorflow"] == tf.__version__
    data = load(str(sorted_test_dir), split="test")
    data = data.take(balanced_indices(data.labels, 20, 10))
    expected = np.mean(predict_labels(classifier, data.to_float(), branch="normal")
                       == data.labels)
    assert report["accuracies"]["clean"] == pytest.approx(expected)
    assert report["accuracies"]["pgd3"] <= report["accuracies"]["clean"]
    assert [p["epsilon_255"] for p in report["accuracy_vs_epsilon"]] == pytest.approx([0, 8, 64])
    assert report["accuracy_vs_epsilon"][0]["accuracy"] == pytest.approx(expected)
    assert {g["name"]: g["status"] in ("pass", "warn") for g in report["guards"]} == {
        "steps": True, "epsilon": True, "large_epsilon": True, "autoattack_vs_pgd": False}
    assert [r["name"] for r in report["guard_runs"]] == ["pgd2 (steps check)"]
    markdown = (output.parent / "report.md").read_text()
    assert "| pgd3 |" in markdown and "## Gradient-masking checks" in markdown
    assert (output.parent / "accuracy_vs_epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = subprocess.run([sys.executable, "-m", "acl_tf.evaluate", f"--model={tmp_path}",
                          f"--output={tmp_path / 'r.json'}"], cwd=project_root,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("no best.keras") == 1
