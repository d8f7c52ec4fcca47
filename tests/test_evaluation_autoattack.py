"""acl_tf.evaluation.autoattack: AutoAttack (ART) finds exactly the non-robust examples of a linear
model."""

import numpy as np
import pytest
from eval_helpers import EPS, LinearClassifier


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
