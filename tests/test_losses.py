"""The losses against NumPy re-derivations: NT-Xent, TRADES (with its KL term and the fine-tuning
cross-entropy) and the semi-supervised student loss."""

import numpy as np
import pytest
import tensorflow as tf
from numpy_refs import np_log_softmax, np_softmax

from acl_tf.losses import (
    SEMISUP_TERMS,
    cross_entropy,
    distillation_loss,
    nt_xent,
    semisup_student_loss,
    soft_labels,
    trades_kl,
    trades_loss,
)


def nt_xent_numpy(z_a, z_b, temperature):
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, batch = len(z), len(z_a)
    sim = z @ z.T / temperature
    losses, hits = [], []
    for i in range(n):
        pos = (i + batch) % n
        others = [j for j in range(n) if j != i]
        log_denominator = np.log(np.sum(np.exp(sim[i, others])))
        losses.append(log_denominator - sim[i, pos])
        hits.append(others[int(np.argmax(sim[i, others]))] == pos)
    return np.mean(losses), np.mean(hits)


def test_two_images_by_hand():
    # Views of image 0 are identical, views of image 1 orthogonal to them: with T = 1 each
    # anchor of image 0 sees cos = 1 with its positive and 0 with both negatives.
    z_a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    z_b = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    expected = -np.log(np.e / (np.e + 2.0))
    loss, acc = nt_xent(z_a, z_b, temperature=1.0, return_accuracy=True)
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert float(acc) == 1.0


@pytest.mark.parametrize("batch,dim,temperature", [(2, 3, 0.5), (8, 16, 0.5), (5, 4, 0.1)])
def test_matches_numpy(batch, dim, temperature):
    rng = np.random.default_rng(batch)
    z_a = rng.normal(size=(batch, dim)).astype(np.float32)
    z_b = (z_a + rng.normal(scale=0.8, size=(batch, dim))).astype(np.float32)
    loss, acc = nt_xent(z_a, z_b, temperature, return_accuracy=True)
    ref_loss, ref_acc = nt_xent_numpy(z_a, z_b, temperature)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    assert float(acc) == pytest.approx(ref_acc)


def test_float64_projections_keep_float64():
    """Half-precision projections are widened to float32; float64 ones stay float64 (a float64
    model's loss is then exact to double rounding, as the cross-entropy and TRADES terms)."""
    rng = np.random.default_rng(3)
    z_a, z_b = rng.normal(size=(2, 6, 5))
    loss = nt_xent(tf.constant(z_a), tf.constant(z_b), 0.5)
    assert loss.dtype == tf.float64
    np.testing.assert_allclose(float(loss), nt_xent_numpy(z_a, z_b, 0.5)[0], rtol=1e-12)
    assert nt_xent(tf.constant(z_a, tf.float16), tf.constant(z_b, tf.float16)).dtype == tf.float32


def test_scale_invariant_and_graph_mode():
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 4, 6)).astype(np.float32)
    eager = nt_xent(z_a, z_b)
    graph = tf.function(nt_xent)(z_a * 7.0, z_b * 0.1)
    np.testing.assert_allclose(float(eager), float(graph), rtol=1e-5)


def test_gradient_pulls_positives_together():
    z_a = tf.Variable(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
    z_b = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    before = float(nt_xent(z_a, z_b))
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = nt_xent(z_a, z_b)
        z_a.assign_sub(0.5 * tape.gradient(loss, z_a))
    assert float(nt_xent(z_a, z_b)) < before


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), temperature=0.0)


# -- TRADES (fine-tuning) ----------------------------------------------------------------------


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
def trades_batch():
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


def test_trades_kl_reductions_match_kldivloss(trades_batch):
    clean, adv, _ = trades_batch
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


def test_trades_loss_matches_numpy(trades_batch):
    clean, adv, labels = trades_batch
    for beta in (0.0, 1.0, 6.0):
        expected = np_trades(clean, adv, labels, beta)
        assert float(trades_loss(clean, adv, labels, beta)) == pytest.approx(expected, rel=1e-5)
    assert float(cross_entropy(labels, clean)) == pytest.approx(
        np_cross_entropy(labels, clean), rel=1e-5)


def test_trades_gradients_flow_into_both_logits(trades_batch):
    """The clean softmax is not detached (as in the TRADES code): compare with finite differences
    of the NumPy reference."""
    clean, adv, labels = trades_batch
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


# -- semi-supervised student loss ---------------------------------------------------------------


RNG = np.random.default_rng(0)


def np_distill(student, p, temperature):
    return -(np.asarray(p, np.float64) * np_log_softmax(np.asarray(student) / temperature)).sum(1)


def np_ce(logits, labels):
    return -np_log_softmax(logits)[np.arange(len(labels)), labels]


def np_kl(clean, adv):
    log_p = np_log_softmax(clean)
    return (np.exp(log_p) * (log_p - np_log_softmax(adv))).sum(1)


def np_semisup(clean, adv, labels, p, labelled, alpha, temperature, beta, weight, convention):
    n = len(adv)
    a_ce, a_kd = (alpha, 1 - alpha) if convention == "paper" else (1 - alpha, alpha)
    kd = np_distill(adv, p, temperature)
    t2 = weight * temperature ** 2
    return {"ce_labelled": a_ce * np_ce(adv[labelled], labels[labelled]).sum() / n,
            "distill_labelled": a_kd * t2 * kd[labelled].sum() / n,
            "distill_unlabelled": t2 * kd[~labelled].sum() / n,
            "robust_kl": beta * np_kl(clean, adv).sum() / n}


def random_batch(n=12, classes=5, n_labelled=4):
    clean = RNG.normal(size=(n, classes)).astype(np.float32) * 2
    adv = (clean + RNG.normal(size=(n, classes))).astype(np.float32)
    p = np_softmax(RNG.normal(size=(n, classes)) * 3).astype(np.float32)
    labelled = np.zeros(n, bool)
    labelled[RNG.choice(n, n_labelled, replace=False)] = True
    labels = np.where(labelled, RNG.integers(0, classes, n), -1).astype(np.int64)
    return clean, adv, labels, p, labelled


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_loss_matches_numpy(temperature):
    student = RNG.normal(size=(6, 10)).astype(np.float32) * 3
    p = np_softmax(RNG.normal(size=(6, 10))).astype(np.float32)
    expected = np_distill(student, p, temperature)
    got = distillation_loss(student, p, temperature, reduction="none").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(distillation_loss(student, p, temperature)) == pytest.approx(expected.mean(),
                                                                            rel=1e-5)
    assert float(distillation_loss(student, p, temperature, "sum")) == pytest.approx(
        expected.sum(), rel=1e-5)


def test_distillation_is_kl_plus_teacher_entropy():
    """KD(z, p, T) = KL(p || softmax(z / T)) + H(p): minimal, and equal to H(p), at z = T log p."""
    p = np_softmax(RNG.normal(size=(4, 10)))
    entropy = -(p * np.log(p)).sum(1)
    for temperature in (1.0, 3.0):
        at_teacher = temperature * np.log(p)
        got = distillation_loss(at_teacher.astype(np.float32), p.astype(np.float32), temperature,
                                reduction="none").numpy()
        np.testing.assert_allclose(got, entropy, rtol=1e-5)
        other = RNG.normal(size=(4, 10)).astype(np.float32)
        kl = (p * (np.log(p) - np_log_softmax(other / temperature))).sum(1)
        np.testing.assert_allclose(distillation_loss(other, p.astype(np.float32), temperature,
                                                     "none").numpy(), kl + entropy, rtol=1e-5)


def test_soft_labels_are_the_tempered_softmax():
    logits = RNG.normal(size=(3, 10)).astype(np.float32)
    np.testing.assert_allclose(soft_labels(logits, 2.0).numpy(), np_softmax(logits / 2.0),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(logits, 0.0)


@pytest.mark.parametrize("alpha,temperature,beta,weight,convention", [
    (0.5, 1.0, 6.0, 1.0, "paper"), (0.3, 2.0, 6.0, 1.0, "paper"), (0.3, 2.0, 1.0, 0.5, "code"),
    (1.0, 4.0, 0.0, 1.0, "paper")])
def test_semisup_student_loss_term_by_term(alpha, temperature, beta, weight, convention):
    clean, adv, labels, p, labelled = random_batch()
    expected = np_semisup(clean, adv, labels, p, labelled, alpha, temperature, beta, weight,
                          convention)
    loss, terms = semisup_student_loss(clean, adv, labels, p, labelled, alpha=alpha,
                                       temperature=temperature, beta=beta, distill_weight=weight,
                                       alpha_convention=convention, return_terms=True)
    assert set(terms) == set(SEMISUP_TERMS)
    for name in SEMISUP_TERMS:
        assert float(terms[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    assert float(loss) == pytest.approx(sum(expected.values()), rel=1e-5)


def test_semisup_loss_properties():
    clean, adv, labels, p, labelled = random_batch()
    base = float(semisup_student_loss(clean, adv, labels, p, labelled))
    # The labels of unlabelled images are never read.
    other = np.where(labelled, labels, RNG.integers(0, 5, len(labels)))
    assert float(semisup_student_loss(clean, adv, other, p, labelled)) == pytest.approx(base)
    # The two conventions agree at alpha = 0.5 and differ elsewhere.
    assert float(semisup_student_loss(clean, adv, labels, p, labelled,
                                      alpha_convention="code")) == pytest.approx(base)
    assert float(semisup_student_loss(clean, adv, labels, p, labelled, alpha=0.2)) != \
        pytest.approx(float(semisup_student_loss(clean, adv, labels, p, labelled, alpha=0.2,
                                                 alpha_convention="code")))
    # All unlabelled, beta 0, T 1: the mean distillation loss; the KL term is TRADES' KL.
    none = np.zeros(len(labels), bool)
    assert float(semisup_student_loss(clean, adv, labels, p, none, beta=0.0)) == pytest.approx(
        np_distill(adv, p, 1.0).mean(), rel=1e-5)
    _, terms = semisup_student_loss(clean, adv, labels, p, labelled, beta=2.0, return_terms=True)
    assert float(terms["robust_kl"]) == pytest.approx(2.0 * float(trades_kl(clean, adv)), rel=1e-5)
    # Gradients reach both the clean and the adversarial logits.
    c, a = tf.Variable(clean), tf.Variable(adv)
    with tf.GradientTape() as tape:
        loss = semisup_student_loss(c, a, labels, p, labelled)
    grads = tape.gradient(loss, [c, a])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": 1.5}, "alpha"), ({"beta": -1.0}, "beta"), ({"temperature": 0.0}, "temperature"),
    ({"alpha_convention": "torch"}, "alpha_convention")])
def test_semisup_loss_rejects_bad_arguments(kwargs, message):
    clean, adv, labels, p, labelled = random_batch()
    with pytest.raises(ValueError, match=message):
        semisup_student_loss(clean, adv, labels, p, labelled, **kwargs)
