"""acl_tf.optimizers: SGD with coupled L2 (against torch.optim.SGD by hand), the per-epoch piecewise
schedule of fine-tuning, LARS and the warm-up cosine schedule of pre-training (against NumPy
references)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.optimizers import LARS, SGDL2, piecewise_epochs, warmup_cosine


def torch_sgd_reference(w, grads, lrs, momentum, wd, nesterov=False):
    """torch.optim.SGD(momentum, weight_decay, dampening=0) by hand."""
    w, buf = np.array(w, np.float64), None
    for g, lr in zip(grads, lrs):
        d = np.asarray(g, np.float64) + wd * w
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * (d + momentum * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.9, 2e-4, False), (0.9, 0.1, True),
                                                  (0.0, 0.1, False)])
def test_sgd_l2_matches_torch_sgd(momentum, wd, nesterov):
    w0 = [1.0, -2.0, 0.5]
    grads = [[0.1, 0.2, -0.3], [-0.4, 0.0, 0.2], [0.3, -0.1, 0.0], [0.05, 0.05, 0.05]]
    # Rate 0.1 for two steps, then 0.01: the momentum buffer must not carry the old rate.
    schedule = piecewise_epochs(0.1, steps_per_epoch=2, decay_epochs=[1])
    var = keras.Variable(np.array(w0, np.float32))
    opt = SGDL2(schedule, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for g in grads:
        opt.apply([tf.constant(g, tf.float32)], [var])
    expected = torch_sgd_reference(w0, grads, [0.1, 0.1, 0.01, 0.01], momentum, wd, nesterov)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5)


def test_sgd_l2_is_coupled_not_keras_decoupled():
    """With a zero gradient, coupled L2 with momentum decays through the buffer."""
    var = keras.Variable(np.array([1.0], np.float32))
    opt = SGDL2(0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(2):
        opt.apply([tf.zeros([1])], [var])
    # step 1: d = 0.5, b = 0.5, w = 0.95; step 2: d = 0.475, b = 0.925, w = 0.8575
    assert float(var.numpy()[0]) == pytest.approx(0.8575, rel=1e-6)
    restored = SGDL2.from_config(opt.get_config())
    assert (restored.momentum, restored.l2, restored.nesterov) == (0.9, 0.5, False)


def test_piecewise_schedule_boundaries():
    lr = piecewise_epochs(0.1, steps_per_epoch=10, decay_epochs=(15, 20))
    values = {step: float(lr(step)) for step in (0, 149, 150, 199, 200, 10_000)}
    assert values == pytest.approx({0: 0.1, 149: 0.1, 150: 0.01, 199: 0.01, 200: 0.001,
                                    10_000: 0.001})
    assert piecewise_epochs(0.1, 10, ()) == 0.1
    for bad in ([0], [20, 15], [5, 5]):
        with pytest.raises(ValueError, match="decay_epochs"):
            piecewise_epochs(0.1, 10, bad)


def test_schedule_seen_by_the_optimizer_drops_at_the_epoch_boundary():
    """The first step of epoch 16 (iterations = 15 * steps) already uses the decayed rate."""
    steps = 4
    var = keras.Variable(np.array([0.0], np.float32))
    opt = SGDL2(piecewise_epochs(0.1, steps, (15, 20)), momentum=0.0)
    opt.build([var])
    moves = []
    for iteration in (15 * steps - 1, 15 * steps):
        opt.iterations.assign(iteration)
        before = float(var.numpy()[0])
        opt.apply([tf.ones([1])], [var])
        moves.append(before - float(var.numpy()[0]))
    assert moves == pytest.approx([0.1, 0.01])


def lars_numpy(w, g, v, lr, momentum, wd, eta):
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    local = eta * w_norm / (g_norm + wd * w_norm) if w_norm > 1e-15 and g_norm > 1e-15 else 1.0
    v = momentum * v + lr * local * (g + wd * w)
    return w - v, v


def test_lars_matches_reference():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    b0 = np.zeros(4, np.float32)  # zero weights: trust ratio falls back to 1
    var_w, var_b = tf.Variable(w0), tf.Variable(b0)
    opt = LARS(learning_rate=2.0, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.01)
    w, b, vw, vb = w0.astype(np.float64), b0.astype(np.float64), 0.0, 0.0
    for step in range(3):
        gw = rng.normal(size=w0.shape).astype(np.float32)
        gb = rng.normal(size=b0.shape).astype(np.float32)
        opt.apply([gw, gb], [var_w, var_b])
        w, vw = lars_numpy(w, gw, vw, 2.0, 0.9, 1e-3, 0.01)
        b, vb = lars_numpy(b, gb, vb, 2.0, 0.9, 1e-3, 0.01)
        np.testing.assert_allclose(var_w.numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var_b.numpy(), b, rtol=1e-5, atol=1e-6)


def reference_cosine(step, total, peak, final, warmup):
    if step < warmup:
        return peak * step / warmup
    return final + (peak - final) * 0.5 * (1 + math.cos((step - warmup) / (total - warmup) * math.pi))


def test_warmup_cosine_matches_reference():
    """The schedule at iteration count i (update i + 1) is the reference's rate of that update:
    its loop steps the scheduler before each update, so update k uses cosine_annealing(k)."""
    schedule = warmup_cosine(5.0, total_steps=100, warmup_steps=10, final_lr=1e-6)
    for iteration in [0, 1, 5, 9, 10, 11, 50, 98, 99]:
        assert float(schedule(iteration)) == pytest.approx(
            reference_cosine(iteration + 1, 100, 5.0, 1e-6, 10), rel=1e-4, abs=1e-6), iteration
    assert float(schedule(0)) == pytest.approx(0.5)      # the first update is not wasted at 0
    assert float(schedule(99)) == pytest.approx(1e-6)    # the last update uses the final rate
    no_warmup = warmup_cosine(1.0, total_steps=4, warmup_steps=0, final_lr=0.0)
    assert [float(no_warmup(i)) for i in range(4)] == pytest.approx(
        [reference_cosine(k, 4, 1.0, 0.0, 0) for k in (1, 2, 3, 4)], abs=1e-6)
    with pytest.raises(ValueError, match="must exceed"):
        warmup_cosine(1.0, total_steps=10, warmup_steps=10)


def test_warmup_cosine_survives_serialisation_and_drives_the_optimizer():
    schedule = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(
        warmup_cosine(5.0, total_steps=100, warmup_steps=10)))
    assert type(schedule).__name__ == "ReferenceCosineDecay"
    assert float(schedule(0)) == pytest.approx(0.5)
    var = keras.Variable(np.ones([2], np.float32))
    opt = SGDL2(warmup_cosine(5.0, total_steps=100, warmup_steps=10), momentum=0.0)
    opt.apply([tf.ones([2])], [var])
    np.testing.assert_allclose(var.numpy(), 1.0 - 0.5)


def dynacl_cosine(step, total, peak, final, warmup):
    """DynACL's cosine_annealing (PKU-ML/DYNACL utils.py): its warm-up is (step + 1) / warmup."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return final + (peak - final) * 0.5 * (1 + math.cos((step - warmup) / (total - warmup)
                                                        * math.pi))


@pytest.mark.parametrize("epochs,warmup,per_epoch", [(20, 10, 3), (12, 0, 2), (15, 3, 1)])
def test_epoch_warmup_cosine_is_dynacl_per_epoch(epochs, warmup, per_epoch):
    """optimizer.schedule_per_epoch: every update of epoch e (1-based) uses DynACL's rate of
    that epoch, cosine_annealing(e - 1) (its LambdaLR is stepped after each epoch); the NumPy
    formula is checked against the reference itself in test_parity_methods.py."""
    from acl_tf.configs import OptimizerConfig
    from acl_tf.optimizers import build_pretrain_optimizer, epoch_warmup_cosine

    schedule = epoch_warmup_cosine(5.0, epochs, warmup, per_epoch, final_lr=1e-6)
    ours = np.array([float(schedule(i)) for i in range(epochs * per_epoch)])
    ref = np.repeat([dynacl_cosine(e, epochs, 5.0, 1e-6, warmup) for e in range(epochs)],
                    per_epoch)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    config = OptimizerConfig(warmup_epochs=warmup, schedule_per_epoch=True)
    built = build_pretrain_optimizer(config, 512, per_epoch, epochs)._learning_rate
    assert type(built).__name__ == "ReferenceEpochCosineDecay"
    assert [float(built(i)) for i in range(epochs * per_epoch)] == pytest.approx(ours.tolist())
    # The default stays per update.
    per_update = build_pretrain_optimizer(OptimizerConfig(warmup_epochs=warmup), 512, per_epoch,
                                          epochs)._learning_rate
    assert type(per_update).__name__ == "ReferenceCosineDecay"
    with pytest.raises(ValueError, match="must exceed"):
        epoch_warmup_cosine(1.0, epochs=10, warmup_epochs=10, steps_per_epoch=1)


def test_epoch_warmup_cosine_survives_serialisation_and_drives_the_optimizer():
    from acl_tf.optimizers import epoch_warmup_cosine

    schedule = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(
        epoch_warmup_cosine(5.0, epochs=100, warmup_epochs=10, steps_per_epoch=4)))
    assert type(schedule).__name__ == "ReferenceEpochCosineDecay"
    assert schedule.steps_per_epoch == 4
    assert [float(schedule(i)) for i in (0, 3, 4)] == pytest.approx([0.5, 0.5, 1.0])
    var = keras.Variable(np.ones([2], np.float32))
    opt = SGDL2(schedule, momentum=0.0)
    for _ in range(5):          # the fifth update is the first of epoch 2
        opt.apply([tf.ones([2])], [var])
    np.testing.assert_allclose(var.numpy(), 1.0 - 4 * 0.5 - 1.0, rtol=1e-6)
