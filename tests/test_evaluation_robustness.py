"""acl_tf.evaluation.robustness: PGD and clean accuracy against the exact robust set of linear
models, the epsilon sweep, BN-branch selection, restarts and input checks."""

import numpy as np
import pytest
from eval_helpers import EPS, LinearClassifier, two_class_problem

from acl_tf.attacks import PGDConfig
from acl_tf.evaluation.robustness import (
    accuracy_vs_epsilon,
    clean_accuracy,
    pgd_accuracy,
    pgd_correct,
)


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
