"""Tests of acl_tf.evaluation (PGD / AutoAttack accuracy, sweep, guards, CIFAR-10-C) and of the
``python -m acl_tf.evaluate`` command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import LinearClassifier, make_tiny_classifier

from acl_tf.attacks import PGDConfig
from acl_tf.evaluation import guards
from acl_tf.evaluation.robustness import (
    accuracy_vs_epsilon,
    clean_accuracy,
    pgd_accuracy,
    pgd_correct,
)

EPS = 8 / 255


def two_class_problem(n=300, seed=0, eps=EPS):
    """A 2-class linear model on 2x2 images in [0.2, 0.8] and its exact robust set.

    Score s = w.x + c decides class 1 (s > 0). Under an L-inf budget eps that never hits the
    [0, 1] box, the worst case moves s by eps * ||w||_1, so an example of class 1 is robust iff
    s - eps||w||_1 > 0 and one of class 0 iff s + eps||w||_1 < 0. Examples within 10% of the
    threshold are dropped so that a finite PGD reaches the verdict without doubt.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=12).astype(np.float32)
    c = -0.5 * w.sum()
    weights = np.zeros([12, 2], np.float32)
    weights[:, 1] = w
    biases = np.array([0.0, c], np.float32)
    x = rng.uniform(0.2, 0.8, size=(n, 2, 2, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=n).astype(np.int64)
    s = x.reshape(n, -1).astype(np.float64) @ w + c
    signed = np.where(y == 1, s, -s)           # margin of the true class
    budget = eps * np.abs(w).sum()
    keep = np.abs(np.abs(signed) - budget) > 0.1 * budget
    model = LinearClassifier({"adv": weights, "normal": weights},
                             {"adv": biases, "normal": biases})
    return model, x[keep], y[keep], signed[keep], budget


def test_pgd_accuracy_matches_the_linear_margin_rule():
    for eps in (EPS, 4 / 255):
        model, x, y, margin, budget = two_class_problem(eps=eps)
        clean = margin > 0
        robust = margin > budget
        # A meaningful mix: wrong, correct-but-breakable and robust examples.
        assert clean.mean() > robust.mean() > 0.1 and clean.mean() < 0.95
        config = PGDConfig(epsilon=eps, step_size=eps / 4, steps=10)
        result = pgd_accuracy(model, x, y, config, batch_size=64)
        assert result.num_correct == int(robust.sum())
        assert result.accuracy == pytest.approx(robust.mean())
        np.testing.assert_array_equal(pgd_correct(model, x, y, config, batch_size=64)[0],
                                      robust)
        assert clean_accuracy(model, x, y).accuracy == pytest.approx(clean.mean())
        assert result.settings["steps"] == 10 and result.settings["epsilon_255"] == \
            pytest.approx(eps * 255)


def test_accuracy_vs_epsilon_follows_the_margin_rule():
    model, x, y, margin, _ = two_class_problem(n=200, seed=1)
    w_l1 = float(np.abs(model.w["adv"].numpy()[:, 1]).sum())
    results = accuracy_vs_epsilon(model, x, y, [16 / 255, 0.0, 4 / 255], steps=10)
    assert [r.settings["epsilon_255"] for r in results] == pytest.approx([0, 4, 16])
    for r in results:
        eps = r.settings["epsilon"]
        assert r.settings["step_size"] == pytest.approx(eps / 4)
        # Examples were kept away from the threshold of 8/255 only; at other epsilons allow
        # those within float round-off of theirs to go either way.
        expected = np.mean(margin > eps * w_l1)
        unclear = np.mean(np.abs(margin - eps * w_l1) < 1e-4)
        assert abs(r.accuracy - expected) <= unclear + 1e-9, (eps, r.accuracy, expected)
    assert results[0].accuracy >= results[1].accuracy >= results[2].accuracy


def test_branch_argument_selects_the_weights():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(40, 2, 2, 3)).astype(np.float32)
    w_adv = rng.normal(size=(12, 3)).astype(np.float32)
    w_normal = rng.normal(size=(12, 3)).astype(np.float32)
    zeros = np.zeros(3, np.float32)
    model = LinearClassifier({"adv": w_adv, "normal": w_normal}, {"adv": zeros, "normal": zeros},
                             branch="normal")
    y = (x.reshape(40, -1) @ w_adv).argmax(1).astype(np.int64)    # what the adv branch says
    agree = np.mean((x.reshape(40, -1) @ w_normal).argmax(1) == y)
    assert agree < 1.0
    assert clean_accuracy(model, x, y, branch="adv").accuracy == 1.0
    default = clean_accuracy(model, x, y)                          # the model's own: normal
    assert default.branch == "normal" and default.accuracy == pytest.approx(agree)
    with pytest.raises(ValueError, match="Unknown BN branch"):
        clean_accuracy(model, x, y, branch="clean")


def test_an_example_must_survive_every_restart():
    # No PGD steps: each restart is one uniform random point of the ball. Only pixel 0 matters,
    # with margin eps/2, so a restart fails with probability P(delta_0 < -eps/2) = 1/4.
    n, restarts = 400, 4
    weights = np.zeros([3, 2], np.float32)
    weights[0, 1] = 1.0
    biases = np.array([0.0, -0.5 + EPS / 2], np.float32)
    model = LinearClassifier({"adv": weights, "normal": weights},
                             {"adv": biases, "normal": biases})
    x = np.full([n, 1, 1, 3], 0.5, np.float32)
    y = np.ones(n, np.int64)
    config = PGDConfig(epsilon=EPS, step_size=EPS / 4, steps=0)
    per_restart = pgd_correct(model, x, y, config, restarts=restarts, seed=7)
    assert per_restart.shape == (restarts, n)
    np.testing.assert_allclose(per_restart.mean(axis=1), 0.75, atol=0.08)
    assert len({row.tobytes() for row in per_restart}) == restarts    # different random starts
    result = pgd_accuracy(model, x, y, config, restarts=restarts, seed=7)
    assert result.accuracy == pytest.approx(per_restart.all(axis=0).mean())
    assert result.accuracy == pytest.approx(0.75 ** restarts, abs=0.08)
    assert result.details["per_restart_accuracy"] == pytest.approx(per_restart.mean(axis=1))
    np.testing.assert_array_equal(pgd_correct(model, x, y, config, restarts=restarts, seed=7),
                                  per_restart)                          # reproducible
    with pytest.raises(ValueError, match="random start"):
        pgd_correct(model, x, y, PGDConfig(random_start="none"), restarts=2)


def test_bad_inputs_are_named():
    model, x, y, _, _ = two_class_problem(n=20)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clean_accuracy(model, x * 3, y)
    with pytest.raises(ValueError, match="float"):
        clean_accuracy(model, (x * 255).astype(np.uint8), y)
    with pytest.raises(ValueError, match="labels must have shape"):
        clean_accuracy(model, x, y[:-1])
    with pytest.raises(ValueError, match="batch_size"):
        clean_accuracy(model, x, y, batch_size=0)


# -- gradient-masking checks -----------------------------------------------------------------

def test_guards_warn_on_suspicious_numbers_and_pass_on_sane_ones():
    assert guards.steps_guard({10: 0.50, 20: 0.48, 50: 0.47}).status == "pass"
    rising = guards.steps_guard({10: 0.40, 20: 0.48})
    assert rising.status == "warn" and "40.00%" in rising.message and "48.00%" in rising.message
    assert guards.steps_guard({10: 0.40, 20: 0.405}, tolerance=0.01).status == "pass"
    assert guards.steps_guard({20: 0.4}).status == "skipped"

    assert guards.epsilon_guard({0: 0.8, 2 / 255: 0.6, 8 / 255: 0.45}).status == "pass"
    eps_warn = guards.epsilon_guard({0: 0.8, 8 / 255: 0.3, 16 / 255: 0.5})
    assert eps_warn.status == "warn" and "8/255" in eps_warn.message

    assert guards.large_epsilon_guard(64 / 255, 0.02).status == "pass"
    masked = guards.large_epsilon_guard(64 / 255, 0.31, max_accuracy=0.05)
    assert masked.status == "warn" and "31.00%" in masked.message and "64/255" in masked.message
    assert guards.large_epsilon_guard(64 / 255, None).status == "skipped"

    assert guards.autoattack_vs_pgd_guard(0.40, {"pgd20": 0.45}).status == "pass"
    weak_aa = guards.autoattack_vs_pgd_guard(0.50, {"pgd20": 0.45})
    assert weak_aa.status == "warn" and "pgd20" in weak_aa.message
    assert guards.autoattack_vs_pgd_guard(None, {"pgd20": 0.45}).status == "skipped"
    with pytest.raises(ValueError):
        guards.GuardConfig(large_epsilon_max_accuracy=2.0)


# -- CIFAR-10-C ------------------------------------------------------------------------------

def mean_classifier():
    """Predicts round(9 * mean pixel) for 32x32 images: class j for constant images of j/9."""
    d = 32 * 32 * 3
    j = np.arange(10, dtype=np.float32)
    weights = np.tile(j / d, (d, 1)).astype(np.float32)
    biases = (-(j ** 2) / 18).astype(np.float32)
    return LinearClassifier({"adv": weights, "normal": weights}, {"adv": biases, "normal": biases})


def test_cifar10c_per_config_accuracy_with_mocked_tfds(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    import acl_tf.data
    from acl_tf.evaluation.corruptions import (
        CIFAR10C_CORRUPTIONS,
        Cifar10CConfig,
        evaluate_cifar10c,
    )

    # The list of corruptions is TFDS's own: 19 x 5 configs.
    names = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
    assert names == {f"{c}_{s}" for c in CIFAR10C_CORRUPTIONS for s in range(1, 6)}

    configs = ["fog_1", "fog_4", "snow_1", "snow_4"]
    n = 8

    def as_dataset(self, split, **kwargs):
        # Config k: constant images of classes 0..7, the first k + 1 labelled correctly.
        k = configs.index(self.builder_config.name)
        classes = np.arange(n) % 10
        labels = np.where(np.arange(n) <= k, classes, (classes + 1) % 10)
        images = np.stack([np.full([32, 32, 3], round(255 * c / 9), np.uint8) for c in classes])
        return tf.data.Dataset.from_tensor_slices({"image": images,
                                                   "label": labels.astype(np.int64)})

    calls = []
    real_load = acl_tf.data.load

    def spy(source, **kwargs):
        calls.append((source, kwargs))
        return real_load(source, **kwargs)

    monkeypatch.setattr(acl_tf.data, "load", spy)
    config = Cifar10CConfig(data_dir=str(tmp_path), corruptions=("fog", "snow"),
                            severities=(1, 4), limit=n)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        result = evaluate_cifar10c(mean_classifier(), config, batch_size=4)
    expected = {"fog": {"1": 1 / 8, "4": 2 / 8}, "snow": {"1": 3 / 8, "4": 4 / 8}}
    assert result["accuracy"] == expected   # multiples of 1/8: exact in floating point
    assert result["mean"] == pytest.approx(2.5 / 8)
    assert result["mean_by_corruption"] == pytest.approx({"fog": 1.5 / 8, "snow": 3.5 / 8})
    assert result["mean_by_severity"] == pytest.approx({"1": 2 / 8, "4": 3 / 8})
    assert result["num_examples"] == {"fog_1": n, "fog_4": n, "snow_1": n, "snow_4": n}
    assert [c[0] for c in calls] == [f"cifar10_corrupted/{c}" for c in configs]
    assert all(kw["data_dir"] == str(tmp_path) and kw["split"] == "test" and kw["limit"] == n
               and kw["download"] is False for _, kw in calls)
    json.dumps(result)   # the report must be JSON-able

    with pytest.raises(ValueError, match="Unknown CIFAR-10-C corruption"):
        Cifar10CConfig(corruptions=("fogg",))
    with pytest.raises(ValueError, match="severities"):
        Cifar10CConfig(severities=(0,))


def test_cifar10c_missing_data_names_the_config(tmp_path):
    from acl_tf.data import DataError
    from acl_tf.evaluation.corruptions import Cifar10CConfig, evaluate_cifar10c

    config = Cifar10CConfig(data_dir=str(tmp_path), corruptions=("zoom_blur",), severities=(2,))
    with pytest.raises(DataError, match=r"cifar10_corrupted/zoom_blur_2.*cifar10c_data_dir"):
        evaluate_cifar10c(mean_classifier(), config)


# -- AutoAttack (ART) ------------------------------------------------------------------------

@pytest.mark.slow
def test_autoattack_is_exact_on_a_linear_model():
    """4-class linear model on 8x8 images: an example is robust iff for every other class j,
    (w_y - w_j).x + b_y - b_j > eps * ||w_y - w_j||_1. AutoAttack must find exactly those.
    (Only 12 pixels carry weight, so that some examples are robust at 8/255.)"""
    from acl_tf.evaluation.autoattack import AutoAttackConfig, autoattack_accuracy

    rng = np.random.default_rng(0)
    d, k = 8 * 8 * 3, 4
    weights = rng.normal(0, 0.1, size=(d, k)).astype(np.float32)
    weights[12:] = 0.0
    biases = (-0.5 * weights.sum(0)).astype(np.float32)
    x = rng.uniform(0.2, 0.8, size=(300, 8, 8, 3)).astype(np.float32)
    flat = x.reshape(len(x), -1).astype(np.float64)
    logits = flat @ weights + biases
    y = logits.argmax(1)
    y[::4] = (y[::4] + 1) % k                                    # some wrong labels
    slack = np.full(len(x), np.inf)                              # min_j margin_j - budget_j
    ratio = np.full(len(x), np.inf)
    for j in range(k):
        dw = weights[:, y] - weights[:, [j]]                     # [d, n]
        margin = logits[np.arange(len(x)), y] - logits[:, j]
        budget = EPS * np.abs(dw).sum(0)
        other = y != j
        slack[other] = np.minimum(slack[other], (margin - budget)[other])
        ratio[other] = np.minimum(ratio[other], np.abs(margin - budget)[other] / budget[other])
    robust = slack > 0
    correct = logits.argmax(1) == y
    clear = ratio > 0.3
    pick = np.concatenate([np.flatnonzero(clear & robust)[:4],
                           np.flatnonzero(clear & correct & ~robust)[:4],
                           np.flatnonzero(~correct)[:2]])
    assert len(pick) == 10
    x, y, robust = x[pick], y[pick].astype(np.int64), robust[pick]
    model = LinearClassifier({"adv": weights, "normal": weights},
                             {"adv": biases, "normal": biases})
    config = AutoAttackConfig(apgd_iterations=20, target_classes=3, square_queries=30)
    result = autoattack_accuracy(model, x, y, EPS, config, batch_size=8, seed=1)
    assert result.accuracy == pytest.approx(robust.mean())
    assert result.num_correct == 4
    s = result.settings
    assert s["attacks_run"] == ["apgd-ce", "apgd-t", "square"]
    assert s["attacks_skipped"] == {"fab-t": "ART 1.20 has no FAB attack"}
    assert s["attack_settings"]["apgd-t"]["target_classes"] == 3
    assert s["attack_settings"]["square"]["queries"] == 30
    after = result.details["robust_accuracy_after"]
    assert list(after) == ["clean", "apgd-ce", "apgd-t", "square"]
    assert after["clean"] == pytest.approx(0.8)
    assert list(after.values()) == sorted(after.values(), reverse=True)
    assert result.details["reclassification_disagreements"] == 0
    with pytest.raises(ValueError, match="Unknown AutoAttack attack"):
        AutoAttackConfig(attacks=("apgd-ce", "fab"))


# -- command line ----------------------------------------------------------------------------

def test_attack_names_and_model_paths(tmp_path):
    from acl_tf.configs import ConfigError, EvaluateConfig, load_config
    from acl_tf.evaluation.run import EvaluationError, find_model_file, parse_attack_name

    assert parse_attack_name("PGD20") == ("pgd", 20)
    assert parse_attack_name("autoattack") == ("autoattack", None)
    for bad in ("pgd", "pgd0", "fgsm"):
        with pytest.raises(ValueError, match="Unknown attack"):
            parse_attack_name(bad)
    with pytest.raises(ConfigError, match="Unknown attack 'pgdx'"):
        load_config(EvaluateConfig, "evaluate", "default", ["attacks=[clean, pgdx]"])
    config = load_config(EvaluateConfig, "evaluate", "smoke", ["bn=normal"])
    assert config.bn == "normal" and config.attacks == ("clean", "pgd5")
    assert config.autoattack.square_queries == 20 and config.guards.steps == (2,)
    with pytest.raises(EvaluationError, match="no best.keras"):
        find_model_file(tmp_path)
    (tmp_path / "best.keras").write_bytes(b"")
    assert find_model_file(tmp_path) == tmp_path / "best.keras"


def test_run_evaluation_runs_sweep_and_checks_only_for_robust_attacks():
    from acl_tf.configs import EvaluateConfig, load_config
    from acl_tf.evaluation.run import run_evaluation

    model, x, y, margin, budget = two_class_problem(n=120, seed=4)
    clean_only = load_config(EvaluateConfig, "evaluate", "smoke", ["attacks=[clean]"])
    report = run_evaluation(model, x, y, clean_only)
    assert report["accuracies"] == {"clean": pytest.approx(np.mean(margin > 0))}
    assert report["accuracy_vs_epsilon"] == [] and report["guards"] == []

    config = load_config(EvaluateConfig, "evaluate", "smoke",
                         ["attacks=[clean, pgd8]", "attack.step_size=0.0078431373",
                          "eps_sweep_255=[0, 8]", "guards.steps=[4]"])
    report = run_evaluation(model, x, y, config)
    assert report["accuracies"]["pgd8"] == pytest.approx(np.mean(margin > budget))
    # The sweep gains the large-epsilon point of the checks (64/255 breaks every example).
    assert [p["epsilon_255"] for p in report["accuracy_vs_epsilon"]] == pytest.approx([0, 8, 64])
    assert report["accuracy_vs_epsilon"][-1]["accuracy"] == 0.0
    statuses = {g["name"]: g["status"] for g in report["guards"]}
    assert statuses == {"steps": "pass", "epsilon": "pass", "large_epsilon": "pass",
                        "autoattack_vs_pgd": "skipped"}
    assert [r["name"] for r in report["guard_runs"]] == ["pgd4 (steps check)"]
    json.dumps(report)


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_cli_on_the_shipped_sample(tmp_path, sample_dir, project_root):
    from acl_tf.data import load
    from acl_tf.evaluation.robustness import predict_labels

    classifier = make_tiny_classifier(seed=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    classifier.save(run_dir / "best.keras")
    output = tmp_path / "eval" / "report.json"
    cmd = [sys.executable, "-m", "acl_tf.evaluate", f"--model={run_dir}", "--config=smoke",
           f"--data={sample_dir}", "--limit=8", "--attacks=clean,pgd3", "--bn=normal",
           "--eps_sweep=0,8,64", f"--output={output}"]
    proc = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads(output.read_text())
    assert report["model"] == str(run_dir / "best.keras")
    assert report["branch"] == "normal" and report["num_examples"] == 8
    assert [a["name"] for a in report["attacks"]] == ["clean", "pgd3"]
    assert report["attacks_run"][1].startswith("pgd3: PGD Linf eps 8/255, step 2/255, 3 steps")
    assert report["settings"]["data"]["limit"] == 8
    assert report["versions"]["tensorflow"] == tf.__version__
    data = load(str(sample_dir), split="test", limit=8)
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
    assert bad.returncode == 2 and "no best.keras" in bad.stderr
