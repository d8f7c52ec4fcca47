"""Parity of ACL pre-training with the reference PyTorch code (``train_simCLR.py``).

Vectors (``scripts/parity/make_vectors.py``): ``pretrain_attack.npz`` (``PGD_contrastive``, 5
steps, from a stored uniform start), ``ds_step.npz`` and ``s2s_step.npz`` (one iteration of the
script's ``train`` with its LARS, cosine scheduler and model: loss, gradient of every parameter,
LARS update, BN running statistics). acl-tf runs the same from the ``cifar10_official`` preset
(DS loss = mean of the streams, ImageNet normalisation), with the reference's random start
injected; its ``train_step`` is the real one. Tolerances and measured differences:
docs/parity.md, "Parity vectors".
"""

import numpy as np
import pytest
import tensorflow as tf

import parity_helpers as ph
from acl_tf import attacks
from acl_tf.configs import PretrainConfig
from acl_tf.configs.loader import load_config
from acl_tf.losses import nt_xent

# The attack: pixels of x' that may differ (a sign step taken where the gradient is ~0) and the
# NT-Xent at x'.
ATTACK_PIXEL_FRACTION = 0.01
ATTACK_LOSS_RTOL = 1e-3
# A step: loss, gradients and updates as max abs difference / max abs reference value of each
# tensor (at the stored entries), and the relative difference of each tensor's norm. float32
# rounding alone gives ~3e-5; the tolerance allows for a ReLU whose input rounds to the other
# side of 0 in one framework (one of 524,288 positions in stage 1 flips under TensorFlow's Eigen
# kernels, which the test session uses, and moves the gradients of the layers below by up to
# 0.6%; docs/parity.md).
STEP_LOSS_RTOL = 1e-5
STEP_GRAD_RTOL = 3e-2
STEP_NORM_RTOL = 5e-3
STEP_STATS_RTOL = 1e-4
# The gradient of the first head layer's bias is 0 up to rounding (a BN follows it); LARS scales
# that rounding noise to a step of fixed size, so its update is not comparable (docs/parity.md).
NOISE_KEYS = {"fc.fc1.bias"}
NOISE_GRAD_ATOL = 1e-6


def _official_model(fixture, variant, compile_epochs=1000):
    from acl_tf.optimizers import build_pretrain_optimizer
    from acl_tf.tasks.pretrain import build_pretrainer

    config = load_config(PretrainConfig, "pretrain", "cifar10_official", [f"variant={variant}"])
    model = build_pretrainer(config)
    weights = ph.weights_of(fixture)
    ph.check_digest(fixture, weights)
    single = not config.dual_bn
    ph.load_into(weights, model.encoder, model.head,
                 branches=("normal",) if single else ("normal", "adv"))
    # One batch per epoch, as the reference's one-batch loader: its scheduler sees 1000 epochs of
    # 1 step, 10 of them warm-up.
    model.compile(optimizer=build_pretrain_optimizer(config.optimizer, config.batch_size, 1,
                                                     compile_epochs))
    return config, model, weights


def _views(pairs_nchw):
    """Reference [2B, C, H, W] (views interleaved) -> acl-tf (view1, view2), NHWC."""
    stacked = ph.pairs_to_views(ph.nchw_to_nhwc(pairs_nchw))
    return np.split(stacked, 2)


def _inject_start(monkeypatch, delta):
    """The attack's random draw is ``delta`` (the reference's uniform start): what acl-tf then
    does with it (projecting or not, per ``attack.project_start``) is its own code."""
    def noise(shape, config, seed=None, dtype=tf.float32):
        return tf.constant(delta, dtype)

    monkeypatch.setattr(attacks, "random_noise", noise)


def _uniform_start(u, epsilon=8 / 255, dtype="float32"):
    """``torch.rand_like(x) * eps * 2 - eps`` of the stored uniform draws, in the reference's
    arithmetic (float32 on float32 tensors, double on double)."""
    real = np.dtype(dtype).type
    u = np.asarray(u).astype(real)
    return u * real(epsilon) * real(2) - real(epsilon)


def test_pretrain_attack_matches_reference(monkeypatch):
    vec = ph.load("pretrain_attack")
    config, model, _ = _official_model(vec, "ds")
    assert config.attack.steps == int(vec["steps"]) == 5 and not config.attack.project_start
    view1, view2 = _views(ph.input_of(vec, "x"))
    delta = ph.pairs_to_views(ph.nchw_to_nhwc(vec["delta0"]))
    np.testing.assert_array_equal(delta, ph.pairs_to_views(ph.nchw_to_nhwc(
        _uniform_start(ph.input_of(vec, "start")))))
    _inject_start(monkeypatch, delta)
    x_adv = model.adversarial_views(tf.constant(view1), tf.constant(view2)).numpy()
    ref = ph.pairs_to_views(ph.nchw_to_nhwc(vec["x_adv"]))
    differ = float(np.mean(np.abs(x_adv - ref) > 1e-6))
    ph.record("pretrain attack: fraction of pixels of x' that differ", rel=differ,
              tol=ATTACK_PIXEL_FRACTION)
    assert differ <= ATTACK_PIXEL_FRACTION
    x = np.concatenate([view1, view2])
    assert np.max(np.abs(x_adv - x)) <= 8 / 255 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    z = model(x_adv, training=False, branch="adv")
    loss = float(nt_xent(*tf.split(z, 2), temperature=0.5))
    ph.check_close("pretrain attack: NT-Xent at x'", loss, float(vec["final_loss"]),
                   ATTACK_LOSS_RTOL)
    assert loss > float(vec["step_losses"][0])        # the attack raised the loss


def _run_step(monkeypatch, vec, variant):
    config, model, weights = _official_model(vec, variant)
    dtype = model.compute_dtype
    x = ph.input_of(vec, "x")                           # [B, 2, C, H, W], the loader's batch
    view1, view2 = (v.astype(dtype) for v in _views(x.reshape((-1,) + x.shape[2:])))
    before = {id(v): v.numpy().astype(np.float64) for v in model.weights}
    captured = {}
    apply = model.apply_gradients

    def recording(grads, variables):
        captured["grads"] = {id(v): g for g, v in zip(grads, variables) if g is not None}
        apply(grads, variables)

    monkeypatch.setattr(model, "apply_gradients", recording)
    if variant == "ds":
        _inject_start(monkeypatch, ph.pairs_to_views(ph.nchw_to_nhwc(
            _uniform_start(ph.input_of(vec, "start"), dtype=dtype))))
        views = model.adversarial_views
        ref_x_adv = tf.constant(ph.pairs_to_views(ph.nchw_to_nhwc(vec["x_adv"])), dtype)

        def recording_views(*args):
            # acl-tf's own attack runs (and is compared); the rest of the step continues from
            # the reference's x', so that one sign step taken differently where the gradient is
            # ~0 does not blur the comparison of the loss, gradients and update.
            captured["x_adv"] = views(*args)
            return ref_x_adv

        monkeypatch.setattr(model, "adversarial_views", recording_views)
    lr = float(model.optimizer.learning_rate)
    logs = model.train_step(((tf.constant(view1), tf.constant(view2)), tf.zeros([len(view1)])))
    return config, model, weights, before, captured, logs, lr


def _check_step(name, vec, model, weights, before, captured, logs, lr, tol):
    ph.check_close(f"{name}: learning rate of the update", lr, float(vec["lr"]), 1e-7)
    ph.check_close(f"{name}: loss", float(logs["loss"]), float(vec["loss"]), tol["loss"])
    mapping = ph.variable_map(weights, model.encoder, model.head,
                              branches=("normal", "adv") if model.encoder.dual_bn
                              else ("normal",))
    keys = list(weights)
    grads = {k: captured["grads"][id(v)].numpy() for k, v in mapping.items()
             if id(v) in captured["grads"]}
    trained = {k for k in keys if f"grad/{k}" in vec}
    assert set(grads) == trained, sorted(set(grads) ^ trained)
    for key in NOISE_KEYS:
        assert np.max(np.abs(grads[key])) < NOISE_GRAD_ATOL
        assert np.max(np.abs(vec[f"grad/{key}"])) < NOISE_GRAD_ATOL
    worst = ph.compare_packed(vec, "grad", grads, keys, skip=NOISE_KEYS)
    ph.record(f"{name}: gradients (worst tensor)", max_abs=worst["abs"], rel=worst["rel"],
              norm_rel=worst["norm_rel"], worst=worst["worst"], tol=tol["grad"])
    assert worst["rel"] <= tol["grad"], worst
    assert worst["norm_rel"] <= tol["norm"], worst
    updates = {k: v.numpy().astype(np.float64) - before[id(v)] for k, v in mapping.items()
               if k in trained}
    worst = ph.compare_packed(vec, "update", updates, keys, skip=NOISE_KEYS)
    ph.record(f"{name}: LARS update w' - w (worst tensor)", max_abs=worst["abs"],
              rel=worst["rel"], norm_rel=worst["norm_rel"], worst=worst["worst"],
              tol=tol["update"])
    assert worst["rel"] <= tol["update"], worst
    assert worst["norm_rel"] <= max(tol["norm"], tol["update"]), worst
    # Moving statistics: the reference's with the unbiased batch variance converted to the
    # biased one (docs/parity.md).
    worst = ph.compare_stats(vec, "stats", mapping, weights, 2 * len(ph.input_of(vec, "x")))
    ph.record(f"{name}: BN moving statistics after the step (worst)",
              rel=max(worst["running_mean"], worst["running_var"]), tol=tol["stats"])
    assert max(worst["running_mean"], worst["running_var"]) <= tol["stats"], worst


FLOAT32 = {"pixels": ATTACK_PIXEL_FRACTION, "loss": STEP_LOSS_RTOL, "grad": STEP_GRAD_RTOL,
           "norm": STEP_NORM_RTOL, "update": STEP_GRAD_RTOL, "stats": STEP_STATS_RTOL}
# In float64 no ReLU input rounds across 0 and both frameworks agree to double rounding; the
# loss is read from the float32 ``loss`` metric.
FLOAT64 = {"pixels": 0.0, "loss": 2e-7, "grad": 1e-10, "norm": 1e-12, "update": 1e-10,
           "stats": 1e-12}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_ds_step_matches_reference(monkeypatch, restore_policy, precision):
    """One DS step of the official preset: the attack from the reference's start (its x'
    compared), both streams on the reference's x', the mean of their NT-Xent, the gradient of
    every parameter, LARS at the reference's first learning rate, the BN statistics."""
    import keras

    keras.config.set_dtype_policy(precision)
    vec = ph.load("ds_step" if precision == "float32" else "ds_step_f64")
    config, model, weights, before, captured, logs, lr = _run_step(monkeypatch, vec, "ds")
    assert config.ds_average
    x_adv = captured["x_adv"].numpy()
    ref = ph.pairs_to_views(ph.nchw_to_nhwc(vec["x_adv"]))
    differ = float(np.mean(np.abs(x_adv - ref) > 1e-6))
    tol = FLOAT32 if precision == "float32" else FLOAT64
    ph.record(f"ds step {precision}: fraction of pixels of x' that differ", rel=differ,
              tol=tol["pixels"])
    assert differ <= tol["pixels"]
    _check_step(f"ds step {precision}", vec, model, weights, before, captured, logs, lr, tol)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_s2s_step_matches_reference(monkeypatch, restore_policy, precision):
    import keras

    keras.config.set_dtype_policy(precision)
    vec = ph.load("s2s_step" if precision == "float32" else "s2s_step_f64")
    config, model, weights, before, captured, logs, lr = _run_step(monkeypatch, vec, "s2s")
    assert not config.dual_bn
    _check_step(f"s2s step {precision}", vec, model, weights, before, captured, logs, lr,
                FLOAT32 if precision == "float32" else FLOAT64)


def test_official_preset_is_the_reference_code_and_the_paper_preset_is_not():
    official = load_config(PretrainConfig, "pretrain", "cifar10_official")
    paper = load_config(PretrainConfig, "pretrain", "cifar10_resnet18")
    assert official.ds_average and not paper.ds_average
    assert official.augment.crop_scale == (0.1, 1.0) and paper.augment.crop_scale == (0.08, 1.0)
    assert official.model.normalization == "imagenet" and paper.model.normalization == "cifar10"
    assert not official.attack.project_start and paper.attack.project_start
    # Everything else is the same.
    import dataclasses

    def rest(config):
        values = dataclasses.asdict(config)
        values.pop("ds_average")
        values["augment"].pop("crop_scale")
        values["model"].pop("normalization")
        values["attack"].pop("project_start")
        return values

    assert rest(official) == rest(paper)
