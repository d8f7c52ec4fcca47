"""NT-Xent against a NumPy re-derivation."""

import numpy as np
import pytest
import tensorflow as tf

from acl_tf.losses import nt_xent


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
