"""TRADES loss, its KL term and the fine-tuning cross-entropy against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from acl_tf.losses import cross_entropy, trades_kl, trades_loss


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_cross_entropy(labels, logits):
    return -_log_softmax(logits)[np.arange(len(labels)), labels].mean()


def np_kl_div_sum(logits_clean, logits_adv):
    """torch ``nn.KLDivLoss(size_average=False)(log_softmax(adv), softmax(clean))``:
    sum over every element of target * (log(target) - input)."""
    target = np.exp(_log_softmax(logits_clean))
    return float(np.sum(target * (np.log(target) - _log_softmax(logits_adv))))


def np_trades(logits_clean, logits_adv, labels, beta):
    return (np_cross_entropy(labels, logits_clean)
            + beta * np_kl_div_sum(logits_clean, logits_adv) / len(labels))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 2, (16, 10))
    adv = clean + rng.normal(0, 1, (16, 10))
    labels = rng.integers(0, 10, 16)
    return clean, adv, labels


def test_trades_kl_hand_computed():
    # p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 log(2/3) + 1/2 log 2.
    expected = 0.5 * np.log(2 / 3) + 0.5 * np.log(2)
    value = trades_kl(tf.constant([[0.0, 0.0]]), tf.constant([[np.log(3.0), 0.0]]))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_trades_kl_reductions_match_kldivloss(batch):
    clean, adv, _ = batch
    total = np_kl_div_sum(clean, adv)
    assert float(trades_kl(clean, adv, "sum")) == pytest.approx(total, rel=1e-5)
    assert float(trades_kl(clean, adv)) == pytest.approx(total / len(clean), rel=1e-5)
    per_example = trades_kl(clean, adv, "none").numpy()
    assert per_example.shape == (16,)
    assert per_example.min() >= 0
    assert per_example.sum() == pytest.approx(total, rel=1e-5)
    assert float(trades_kl(clean, clean)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        trades_kl(clean, adv, "max")


def test_trades_loss_matches_numpy(batch):
    clean, adv, labels = batch
    for beta in (0.0, 1.0, 6.0):
        expected = np_trades(clean, adv, labels, beta)
        assert float(trades_loss(clean, adv, labels, beta)) == pytest.approx(expected, rel=1e-5)
    assert float(cross_entropy(labels, clean)) == pytest.approx(
        np_cross_entropy(labels, clean), rel=1e-5)


def test_trades_gradients_flow_into_both_logits(batch):
    """The clean softmax is not detached (as in the TRADES code): compare with finite differences
    of the NumPy reference."""
    clean, adv, labels = batch
    clean_t, adv_t = tf.Variable(clean, dtype=tf.float64), tf.Variable(adv, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = trades_loss(clean_t, adv_t, labels, beta=6.0)
    g_clean, g_adv = tape.gradient(loss, [clean_t, adv_t])
    h = 1e-4
    for grad, which in ((g_clean, 0), (g_adv, 1)):
        for i, j in ((0, 0), (3, 7), (15, 9)):
            args = [clean.copy(), adv.copy()]
            args[which][i, j] += h
            up = np_trades(*args, labels, 6.0)
            args[which][i, j] -= 2 * h
            down = np_trades(*args, labels, 6.0)
            assert grad.numpy()[i, j] == pytest.approx((up - down) / (2 * h), rel=1e-3, abs=1e-6)
