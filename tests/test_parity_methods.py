"""Parity of DynACL and AIR pre-training with their reference PyTorch code.

Vectors (``scripts/parity/make_method_vectors.py``, from PKU-ML/DYNACL ``train_DynACL.py`` and
GodXuxilie/Enhancing_ACL_via_AIR ``pretraining.py`` / ``AIR.py``):

* ``air_loss.npz``: ``AIR_Loss`` (total, the four terms, the total's gradient) against
  acl-tf's NT-Xent and :func:`acl_tf.losses.air_regularizers` (``divergence="reference"``);
* ``dynacl_schedules.npz``: the scripts' own epoch loops: DynACL's augmentation strength,
  ``weight_adv`` and per-epoch learning rate, AIR's strength, weight and per-update learning rate,
  against :class:`~acl_tf.configs.DynamicConfig`, :class:`~acl_tf.tasks.pretrain.StreamSchedule`
  and :func:`~acl_tf.optimizers.build_pretrain_optimizer`;
* ``dynacl_step.npz`` / ``air_step.npz`` (and ``*_f64``): one iteration of each script's
  ``train`` (DynACL with its momentum encoder) against acl-tf's ``train_step``, the model built
  from the method's preset (:func:`method_config`; the presets are checked to be
  ``cifar10_official`` with the reference code's settings).

Tolerances and measured differences: docs/parity.md, "DynACL and AIR".
"""

import numpy as np
import pytest
import tensorflow as tf

import parity_helpers as ph
from acl_tf.configs import PretrainConfig
from acl_tf.configs.loader import load_config
from acl_tf.losses import nt_xent
from test_parity_pretrain import (
    FLOAT32,
    FLOAT64,
    NOISE_GRAD_ATOL,
    NOISE_KEYS,
    _inject_start,
    _uniform_start,
    _views,
)

AIR_INPUTS = ("zi", "zj", "z_orig", "zi_adv", "zj_adv")
# AIR_Loss: its terms and the total's gradient (max abs diff / max abs reference value). float32
# rounding of sums over the batch; in float64 only double rounding is left.
AIR_LOSS_TOL = {"float32": {"terms": 1e-5, "grad": 1e-4},
                "float64": {"terms": 1e-12, "grad": 1e-10}}
# Schedules: strengths and weights are the same formulas (exact up to double rounding); learning
# rates go through Keras' float32 schedule arithmetic (5.0 is rounded to ~3e-7).
SCHEDULE_RTOL = 1e-12
LR_RTOL = 1e-6
# The steps: test_parity_pretrain's tolerances, except
# * float32 attack: its 5 sign steps diverge from the reference's where TensorFlow's float32
#   kernels turn a ReLU the other way (in the DynACL vector the first input gradient differs by
#   0.7%, 13 pixels' signs at the second step, 6.7% of x' after the fifth); in float64 x' is the
#   reference's exactly, and the rest of the float32 step continues from the reference's x';
# * float32 gradients and updates: 5e-2 per tensor (norms 5e-3). Measured against float64
#   arithmetic on the same inputs, acl-tf's float32 gradients are off by up to 3.2% (DynACL,
#   ``layer1.0.bn2`` of the normal branch: a ReLU at rounding level) and the reference's own by
#   up to 1.2% (DynACL) and 14% (AIR, ``fc.fc1.weight``, where acl-tf's is within 0.4%): that
#   one tensor is allowed 0.2 (FLOAT32_ILL_CONDITIONED);
# * float64 updates are compared per unit learning rate: the Keras optimiser holds its rate in a
#   float32 variable, which rounds the rate of epoch 500 (2.54...) by 4e-8 / 7e-8 (the first
#   updates of test_parity_pretrain use 0.5, which float32 holds exactly); a first LARS update
#   (no momentum yet) is proportional to the rate.
ATTACK_PIXEL_FRACTION = 0.1
STEP_TOL = {"float32": dict(FLOAT32, pixels=ATTACK_PIXEL_FRACTION, grad=5e-2, update=5e-2),
            "float64": FLOAT64}
FLOAT32_ILL_CONDITIONED = {"air": {"fc.fc1.weight": 0.2}, "dynacl": {}}
# The key encoder's EMA change k' - k = (1 - m)(q - k), relative to each tensor's largest change.
EMA_TOL = {"float32": 1e-6, "float64": 1e-12}


# The reference code's settings on top of the ACL code's (``cifar10_official``: DS average, crop
# (0.1, 1), ImageNet normalisation, unprojected attack start, LARS 5.0, 1000 epochs, batch 512):
# * DynACL (``train_DynACL.py``): the momentum encoder (m 0.99), the learning rate stepped per
#   epoch, bilinear RandomResizedCrop (torchvision's default, which ``reload`` keeps), the weight
#   one epoch ahead of the strength (``weight_lead`` 1, the default), DS average;
# * DynACL-AIR (``pretraining.py --ACL_DS --DynAug``): no momentum encoder, the learning rate
#   stepped per update, the plain weighted sum (1 - w) clean + (1 + w) adv (no ``ds_average``),
#   ``weight_lead`` 0, bicubic crops (``interpolation=3``, the default).
REFERENCE_SETTINGS = {
    "dynacl": ["method=dynacl", "dynamic.momentum_encoder=true",
               "optimizer.schedule_per_epoch=true", "augment.interpolation=bilinear"],
    "dynacl_air": ["method=dynacl_air", "ds_average=false", "dynamic.weight_lead=0"],
}
# The presets of the methods; DynACL's trains the published method, without the code's momentum
# encoder.
PRESETS = {"dynacl": ("cifar10_dynacl", ["dynamic.momentum_encoder=true"]),
           "dynacl_air": ("cifar10_dynacl_air", [])}


def method_config(method: str, *overrides) -> PretrainConfig:
    """The config of ``method`` as its reference code trains: its preset (with the momentum
    encoder for DynACL) and ``overrides`` (``key=value``)."""
    preset, settings = PRESETS[method]
    return load_config(PretrainConfig, "pretrain", preset, settings + list(overrides))


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_method_presets_are_the_reference_code_settings(method):
    import dataclasses

    reference = load_config(PretrainConfig, "pretrain", "cifar10_official",
                            REFERENCE_SETTINGS[method])
    assert dataclasses.asdict(method_config(method)) == dataclasses.asdict(reference)


# -- AIR_Loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", ["small", "large"])
def test_air_loss_matches_reference(name, precision):
    """``AIR_Loss(zi, zj, z_orig, zi_adv, zj_adv, weight)`` = (1 - w) NT-Xent(zi, zj) +
    (1 + w) NT-Xent(zi_adv, zj_adv) + lambda1 SIR + lambda2 AIR, each term and the gradient."""
    from acl_tf.losses import air_regularizers

    vec = ph.load("air_loss")
    tol = AIR_LOSS_TOL[precision]
    tag = "f32" if precision == "float32" else "f64"
    for c, (weight, lambda1, lambda2) in enumerate(vec[f"{name}/cases"]):
        z = [tf.Variable(vec[f"{name}/{k}"].astype(precision)) for k in AIR_INPUTS]
        with tf.GradientTape() as tape:
            nat = nt_xent(z[0], z[1], temperature=0.5)
            adv = nt_xent(z[3], z[4], temperature=0.5)
            sir, air = air_regularizers(*z, temperature=0.5, divergence="reference")
            total = (1 - weight) * nat + (1 + weight) * adv + lambda1 * sir + lambda2 * air
        grads = tape.gradient(total, z)
        key = f"{name}/{tag}/{c}"
        ours = [float(t) for t in (total, nat, adv, sir, air)]
        for term, value, ref in zip(("total", "nat", "adv", "sir", "air"), ours,
                                    vec[f"{key}/terms"]):
            ph.check_close(f"air_loss {name} {precision} case {c}: {term}", value, ref,
                           tol["terms"])
        for k, g in zip(AIR_INPUTS, grads):
            ref, got = ph.stored(vec, f"{key}/grad", k, AIR_INPUTS, g.numpy())
            ph.check_close(f"air_loss {name} {precision} case {c}: gradient {k}", got, ref,
                           tol["grad"])
            norm = float(np.linalg.norm(g.numpy().astype(np.float64)))
            ref_norm = float(vec[f"{key}/grad_norm/{k}"])
            assert abs(norm - ref_norm) <= tol["grad"] * ref_norm, (k, norm, ref_norm)


# -- schedules -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schedules():
    return ph.load("dynacl_schedules")


def _rates(optimizer, steps):
    schedule = optimizer._learning_rate
    return np.array([float(schedule(i)) for i in range(steps)])


def _check_augment(config, epoch, strength):
    """``reload(strength)`` (train_DynACL.py) / ``get_transform(strength)`` (pretraining.py):
    ColorJitter(0.4 s, 0.4 s, 0.4 s, 0.1 s) applied with p 0.8 s, grayscale p 0.2 s,
    RandomResizedCrop scale (1 - 0.9 s, 1); the flip is not annealed."""
    augment = config.augment_at(epoch)
    expected = {"brightness": 0.4 * strength, "contrast": 0.4 * strength,
                "saturation": 0.4 * strength, "hue": 0.1 * strength,
                "jitter_prob": 0.8 * strength, "grayscale_prob": 0.2 * strength,
                "crop_low": 1.0 - 0.9 * strength}
    got = {name: getattr(augment, name) for name in expected if name != "crop_low"}
    got["crop_low"] = augment.crop_scale[0]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (epoch, name)
    assert augment.crop_scale[1] == 1.0 and augment.flip_prob == config.augment.flip_prob == 0.5


@pytest.mark.parametrize("run", ["dynacl_short", "dynacl"])
def test_dynacl_schedules_match_reference(schedules, run):
    """Per epoch: the strength of the data the epoch trains on, the stream weights of its loss
    ((2 - w) / 2 and w / 2, w = ``weight_adv``), and the learning rate of every update (the
    LambdaLR stepped after each epoch)."""
    from acl_tf.optimizers import build_pretrain_optimizer
    from acl_tf.tasks.pretrain import StreamSchedule

    epochs, every = int(schedules[f"{run}/epochs"]), int(schedules[f"{run}/reload_frequency"])
    config = method_config("dynacl", f"epochs={epochs}", f"dynamic.reload_every={every}")
    assert config.dynamic.swap_param == float(schedules[f"{run}/swap_param"])
    assert config.optimizer.learning_rate == float(schedules[f"{run}/base_lr"])
    ref_strength = schedules[f"{run}/strength"]
    ref_weight = schedules[f"{run}/weight_adv"]
    strength = np.array([config.dynamic.strength(e, epochs) for e in range(1, epochs + 1)])
    ph.check_close(f"{run}: augmentation strength per epoch", strength, ref_strength,
                   SCHEDULE_RTOL)
    delta = np.array([config.dynamic.stream_delta(e, epochs) for e in range(1, epochs + 1)])
    ph.check_close(f"{run}: stream delta per epoch (weight_adv - 1)", delta, ref_weight - 1,
                   SCHEDULE_RTOL)
    values = [StreamSchedule(config).values(e) for e in range(epochs)]
    clean = np.array([v["clean_weight"] for v in values])
    adv = np.array([v["adv_weight"] for v in values])
    ph.check_close(f"{run}: adversarial stream weight per epoch (w / 2)", adv, ref_weight / 2,
                   SCHEDULE_RTOL)
    ph.check_close(f"{run}: clean stream weight per epoch ((2 - w) / 2)", clean,
                   (2 - ref_weight) / 2, SCHEDULE_RTOL)
    # The weight steps one epoch before the strength (weight_lead 1).
    first_weight = int(np.argmax(ref_weight > 1)) + 1
    first_strength = int(np.argmax(ref_strength < 1)) + 1
    assert first_weight == every and first_strength == every + 1
    # The data the reference reloads at epochs 1, R + 1, ...: acl-tf's augmentation at each
    # epoch is the reference's transform at that strength.
    reloads = schedules[f"{run}/reload_epochs"]
    np.testing.assert_array_equal(reloads, np.arange(1, epochs + 1, every))
    for epoch in range(1, epochs + 1, max(1, epochs // 40)):
        _check_augment(config, epoch, float(ref_strength[epoch - 1]))
    per_epoch = int(schedules[f"{run}/steps_per_epoch"])
    optimizer = build_pretrain_optimizer(config.optimizer, config.batch_size, per_epoch, epochs)
    ref = schedules[f"{run}/lr"]
    ours = _rates(optimizer, len(ref))
    ph.check_close(f"{run}: learning rate of every update ({epochs} epochs x {per_epoch}, "
                   "stepped per epoch)", ours, ref, LR_RTOL)
    assert np.all(ours.reshape(epochs, per_epoch) == ours.reshape(epochs, per_epoch)[:, :1])


def test_dynacl_resume_recomputes_strength_where_acl_tf_does_not(schedules):
    """The reference's resume reloads the data at ``strength = 1 - (epoch - 1) / epochs`` of the
    resume epoch (train_DynACL.py, ``args.resume`` in the reload condition) until the next
    regular reload; its weights and learning rates continue unchanged. acl-tf computes every
    epoch's strength from the epoch alone, so a resumed run trains as the uninterrupted one."""
    first = int(schedules["dynacl_resumed/first_epoch"])
    epochs, every = int(schedules["dynacl_resumed/epochs"]), int(
        schedules["dynacl_resumed/reload_frequency"])
    whole = {k: schedules[f"dynacl_short/{k}"] for k in ("strength", "weight_adv", "lr")}
    resumed = {k: schedules[f"dynacl_resumed/{k}"] for k in ("strength", "weight_adv", "lr")}
    per_epoch = int(schedules["dynacl_resumed/steps_per_epoch"])
    np.testing.assert_array_equal(resumed["weight_adv"], whole["weight_adv"][first - 1:])
    np.testing.assert_array_equal(resumed["lr"], whole["lr"][(first - 1) * per_epoch:])
    differs = np.flatnonzero(resumed["strength"] != whole["strength"][first - 1:]) + first
    next_reload = (first - 1) // every * every + every + 1
    assert differs.tolist() == list(range(first, next_reload))
    assert resumed["strength"][0] == pytest.approx(1 - (first - 1) / epochs)
    config = method_config("dynacl", f"epochs={epochs}", f"dynamic.reload_every={every}")
    ours = [config.dynamic.strength(e, epochs) for e in range(first, epochs + 1)]
    np.testing.assert_allclose(ours, whole["strength"][first - 1:], rtol=SCHEDULE_RTOL)


@pytest.mark.parametrize("run", ["air_short", "air"])
def test_air_schedules_match_reference(schedules, run):
    """AIR's ``--DynAug``: strength ``1 - int((e - 1) / 50) * 50 / epochs`` (its K = 50 a
    constant of the script), weight ``LAMBDA (1 - strength)`` in step with it (``weight_lead``
    0), loss ``(1 - w) clean + (1 + w) adv`` (no halving), and ACL's per-update learning rate."""
    from acl_tf.optimizers import build_pretrain_optimizer
    from acl_tf.tasks.pretrain import StreamSchedule

    epochs = int(schedules[f"{run}/epochs"])
    config = method_config("dynacl_air", f"epochs={epochs}")
    assert config.dynamic.reload_every == 50
    assert config.dynamic.swap_param == float(schedules[f"{run}/lambda"])
    assert not config.optimizer.schedule_per_epoch and not config.ds_average
    ref_strength, ref_weight = schedules[f"{run}/strength"], schedules[f"{run}/weight"]
    strength = np.array([config.dynamic.strength(e, epochs) for e in range(1, epochs + 1)])
    ph.check_close(f"{run}: augmentation strength per epoch", strength, ref_strength,
                   SCHEDULE_RTOL)
    delta = np.array([config.dynamic.stream_delta(e, epochs) for e in range(1, epochs + 1)])
    ph.check_close(f"{run}: stream delta per epoch (weight)", delta, ref_weight, SCHEDULE_RTOL)
    values = [StreamSchedule(config).values(e) for e in range(epochs)]
    ph.check_close(f"{run}: adversarial stream weight per epoch (1 + w)",
                   np.array([v["adv_weight"] for v in values]), 1 + ref_weight, SCHEDULE_RTOL)
    ph.check_close(f"{run}: clean stream weight per epoch (1 - w)",
                   np.array([v["clean_weight"] for v in values]), 1 - ref_weight, SCHEDULE_RTOL)
    for epoch in range(1, epochs + 1, max(1, epochs // 40)):
        _check_augment(config, epoch, float(ref_strength[epoch - 1]))
    per_epoch = int(schedules[f"{run}/steps_per_epoch"])
    optimizer = build_pretrain_optimizer(config.optimizer, config.batch_size, per_epoch, epochs)
    ref = schedules[f"{run}/lr"]
    ph.check_close(f"{run}: learning rate of every update ({epochs} epochs x {per_epoch})",
                   _rates(optimizer, len(ref)), ref, LR_RTOL)


def test_per_epoch_schedule_is_not_the_per_update_one(schedules):
    """DynACL's per-epoch rate differs from ACL's per-update one: its warm-up is one step ahead
    ((step + 1) / warm-up in its ``cosine_annealing``), the peak lasts two epochs, and the last
    epoch stays above the final rate."""
    from acl_tf.optimizers import build_pretrain_optimizer

    epochs = int(schedules["dynacl_short/epochs"])
    per_epoch = int(schedules["dynacl_short/steps_per_epoch"])
    ref = schedules["dynacl_short/lr"].reshape(epochs, per_epoch)[:, 0]
    config = method_config("dynacl", f"epochs={epochs}", "optimizer.schedule_per_epoch=false")
    per_update = _rates(build_pretrain_optimizer(config.optimizer, config.batch_size, 1, epochs),
                        epochs)
    warmup = config.optimizer.warmup_epochs
    assert ref[warmup - 1] == ref[warmup] == pytest.approx(5.0)
    assert ref[-1] > 10 * config.optimizer.final_learning_rate
    assert per_update[-1] == pytest.approx(config.optimizer.final_learning_rate)
    assert not np.allclose(per_update, ref)


# -- the steps -----------------------------------------------------------------------------------
def _split(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _compile_at(model, config, vec, steps_per_epoch=1):
    """The method's optimiser (one batch per epoch, as the reference's one-batch loader), its
    iteration count at the start of the vector's epoch, and the stream weights of that epoch
    (the real :class:`StreamSchedule` callback)."""
    from acl_tf.optimizers import build_pretrain_optimizer
    from acl_tf.tasks.pretrain import StreamSchedule

    model.compile(optimizer=build_pretrain_optimizer(config.optimizer, config.batch_size,
                                                     steps_per_epoch, config.epochs))
    epoch = int(vec["epoch"])
    model.optimizer.iterations.assign((epoch - 1) * steps_per_epoch)
    schedule = StreamSchedule(config)
    schedule.set_model(model)
    schedule.on_epoch_begin(epoch - 1)
    return epoch, schedule.values(epoch - 1)


def _exact_stream_weights(monkeypatch, model, values):
    """float64 only: ``stream_weights`` is a float32 variable, whose rounding of the weights
    (1/3 and 2/3 by 3e-8) would be the largest difference left; the loss then uses the weights
    in double (the variable itself is checked against them before)."""
    if model.compute_dtype != "float64":
        return
    exact = (tf.constant(values["clean_weight"], tf.float64),
             tf.constant(values["adv_weight"], tf.float64))
    monkeypatch.setattr(model, "loss_weights", lambda *args: exact)


def _record_step(monkeypatch, model, vec, precision):
    """Records the gradients ``train_step`` applies; runs acl-tf's attack from the reference's
    start and (float32) continues from the reference's x', so that a sign step taken the other
    way where the gradient is ~0 does not blur the rest; in float64 x' agrees and the step
    continues from acl-tf's own."""
    captured = {}
    apply = model.apply_gradients

    def recording(grads, variables):
        captured["grads"] = {id(v): g for g, v in zip(grads, variables) if g is not None}
        apply(grads, variables)

    monkeypatch.setattr(model, "apply_gradients", recording)
    dtype = model.compute_dtype
    _inject_start(monkeypatch, ph.pairs_to_views(ph.nchw_to_nhwc(
        _uniform_start(ph.input_of(vec, "start"), dtype=dtype))))
    views = model.adversarial_views
    ref_x_adv = tf.constant(ph.pairs_to_views(ph.nchw_to_nhwc(vec["x_adv"])), dtype)

    def recording_views(*args):
        captured["x_adv"] = views(*args)
        return ref_x_adv if precision == "float32" else captured["x_adv"]

    monkeypatch.setattr(model, "adversarial_views", recording_views)
    return captured


def _check_x_adv(name, vec, captured, tol):
    x_adv = captured["x_adv"].numpy()
    ref = ph.pairs_to_views(ph.nchw_to_nhwc(vec["x_adv"]))
    # float64 x' is stored in float32: a pixel differs when it is off by more than that rounding.
    differ = float(np.mean(np.abs(x_adv - ref) > 1e-6))
    ph.record(f"{name}: fraction of pixels of x' that differ", rel=differ, tol=tol["pixels"])
    assert differ <= tol["pixels"]


def _check_packed(name, vec, prefix, arrays, keys, tol, skip=()):
    worst = ph.compare_packed(vec, prefix, arrays, keys, skip=skip)
    ph.record(f"{name} (worst tensor)", max_abs=worst["abs"], rel=worst["rel"],
              norm_rel=worst["norm_rel"], worst=worst["worst"], tol=tol)
    return worst


def _check_grads_and_update(name, vec, tol, captured, mapping, before, keys, prefix="",
                            loose=None, lr=None):
    """Gradients and LARS updates of every trained tensor; ``loose``: {key: tolerance} of
    tensors compared on their own (ill-conditioned in float32); ``lr``: the rate acl-tf's update
    used, to compare the updates per unit rate (float64)."""
    loose = loose or {}
    scale = 1.0 if lr is None else float(vec["lr"]) / lr
    grads = {k: captured["grads"][id(v)].numpy() for k, v in mapping.items()
             if id(v) in captured["grads"]}
    trained = {k for k in keys if f"grad{prefix}/{k}" in vec}
    assert set(grads) == trained, sorted(set(grads) ^ trained)
    for key in NOISE_KEYS:
        assert np.max(np.abs(grads[key])) < NOISE_GRAD_ATOL
        assert np.max(np.abs(vec[f"grad{prefix}/{key}"])) < NOISE_GRAD_ATOL
    updates = {k: scale * (v.numpy().astype(np.float64) - before[id(v)])
               for k, v in mapping.items() if k in trained}
    for what, arrays, label in (("grad", grads, "gradients"),
                                ("update", updates, "LARS update w' - w")):
        worst = _check_packed(f"{name}: {label}", vec, f"{what}{prefix}", arrays, keys,
                              tol[what], NOISE_KEYS | set(loose))
        assert worst["rel"] <= tol[what], worst
        assert worst["norm_rel"] <= max(tol["norm"], tol[what]), worst
        for key, key_tol in loose.items():
            one = _check_packed(f"{name}: {label}, {key}", vec, f"{what}{prefix}", arrays, keys,
                                key_tol, set(keys) - {key})
            assert one["rel"] <= key_tol and one["norm_rel"] <= tol["norm"], (key, one)


def _check_stats(name, vec, prefix, mapping, weights, batch, tol, only=lambda key: True):
    worst = ph.compare_stats(vec, prefix, mapping, weights, batch, only=only)
    rel = max(worst["running_mean"], worst["running_var"])
    ph.record(f"{name}: BN moving statistics after the step (worst)", rel=rel, tol=tol["stats"])
    assert rel <= tol["stats"], worst


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_dynacl_step_matches_reference(monkeypatch, restore_policy, precision):
    """One DynACL step with the momentum encoder at epoch 500 (``weight_adv`` 4/3): the attack
    through both encoders, the weighted mean of the streams, the gradient and LARS update of the
    trained encoder and head, the EMA of the key ones (from the weights before the update), and
    both models' BN statistics (each normalises its 4 views per pass)."""
    import keras

    from acl_tf.tasks.pretrain import build_pretrainer

    keras.config.set_dtype_policy(precision)
    vec = ph.load("dynacl_step" if precision == "float32" else "dynacl_step_f64")
    config = method_config("dynacl", f"epochs={int(vec['epochs'])}",
                           f"dynamic.reload_every={int(vec['reload_frequency'])}")
    assert config.dynamic.momentum == float(vec["momentum"])
    model = build_pretrainer(config)
    weights = ph.weights_of(vec)
    ph.check_digest(vec, weights)
    w_q, w_k = _split(weights, "encoder_q."), _split(weights, "encoder_k.")
    map_q = ph.load_into(w_q, model.encoder, model.head)
    map_k = ph.load_into(w_k, model.encoder_k, model.head_k)
    epoch, values = _compile_at(model, config, vec)
    w = float(vec["weight_adv"])
    np.testing.assert_allclose(model.stream_weights.numpy(), [(2 - w) / 2, w / 2], rtol=1e-7)
    _exact_stream_weights(monkeypatch, model, values)
    lr = float(model.optimizer.learning_rate)
    tol = STEP_TOL[precision]
    name = f"dynacl step {precision} (epoch {epoch})"
    ph.check_close(f"{name}: learning rate of the update", lr, float(vec["lr"]), 1e-7)

    captured = _record_step(monkeypatch, model, vec, precision)
    before = {id(v): v.numpy().astype(np.float64) for v in model.weights}
    x = ph.input_of(vec, "x")
    view1, view2 = (v.astype(model.compute_dtype)
                    for v in _views(x.reshape((-1,) + x.shape[2:])))
    logs = model.train_step(((tf.constant(view1), tf.constant(view2)), tf.zeros([len(view1)])))
    _check_x_adv(name, vec, captured, tol)
    ph.check_close(f"{name}: loss ((2 - w) clean + w adv) / 2", float(logs["loss"]),
                   float(vec["loss"]), tol["loss"])
    _check_grads_and_update(name, vec, tol, captured, map_q, before, list(w_q), "_q",
                            FLOAT32_ILL_CONDITIONED["dynacl"] if precision == "float32" else {},
                            lr=lr if precision == "float64" else None)
    # The key encoder: no gradient, its weights k + (1 - m)(q - k) with q before the update.
    assert not any(id(v) in captured["grads"] for v in map_k.values())
    keys_k = list(w_k)
    ema = {k: v.numpy().astype(np.float64) - before[id(v)] for k, v in map_k.items()
           if f"update_k/{k}" in vec}
    assert set(ema) == {k for k in keys_k if f"update_k/{k}" in vec}
    worst = _check_packed(f"{name}: key encoder EMA k' - k", vec, "update_k", ema, keys_k,
                          EMA_TOL[precision])
    assert worst["rel"] <= EMA_TOL[precision] and worst["norm_rel"] <= EMA_TOL[precision], worst
    views = len(view1)        # each model normalises one view of each pair per pass
    _check_stats(f"{name} encoder_q", vec, "stats_q", map_q, w_q, views, tol)
    _check_stats(f"{name} encoder_k", vec, "stats_k", map_k, w_k, views, tol)


def _check_two_pass_stats(name, vec, mapping, weights, batches, tol):
    """The ``normal`` branch's moving statistics after two training passes of ``batches``
    images (AIR: the clean views, then the originals). The reference's running variance averages
    unbiased batch variances; each pass's term is converted to the biased one acl-tf averages,
    the first from the statistics stored between the passes (``stats_mid``)."""
    keys = list(weights)
    worst = 0.0
    for key, var in mapping.items():
        kind = key.rsplit(".", 1)[-1]
        if kind not in ("running_mean", "running_var") or "bn_list.0." not in key:
            continue
        ref, ours = ph.stored(vec, "stats", key, keys, var.numpy())
        if kind == "running_var":
            mid, _ = ph.stored(vec, "stats_mid", key, keys, var.numpy())
            _, initial = ph.stored(vec, "stats", key, keys, weights[key].astype(np.float64))
            n1, n2 = (ph.bn_samples(key, b) for b in batches)
            first = 0.9 * initial + (mid - 0.9 * initial) * (n1 - 1) / n1
            ref = 0.9 * first + (ref - 0.9 * mid) * (n2 - 1) / n2
        worst = max(worst, float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref))))
    ph.record(f"{name}: BN moving statistics of the normal branch (two passes, worst)",
              rel=worst, tol=tol["stats"])
    assert worst <= tol["stats"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_air_step_matches_reference(monkeypatch, restore_policy, precision):
    """One DynACL-AIR step at epoch 500 (weight 0.3): the attack, the adversarial, clean and
    original passes, (1 - w) clean + (1 + w) adv + 0.5 SIR + 0.5 AIR, every gradient, LARS at the
    per-update rate, the BN statistics (the ``normal`` branch after its two passes)."""
    import keras

    from acl_tf.tasks.pretrain import build_pretrainer

    keras.config.set_dtype_policy(precision)
    vec = ph.load("air_step" if precision == "float32" else "air_step_f64")
    config = method_config("dynacl_air", f"epochs={int(vec['epochs'])}")
    assert (config.air.lambda1, config.air.lambda2) == (float(vec["lambda1"]),
                                                       float(vec["lambda2"]))
    assert config.dynamic.swap_param == float(vec["train_lambda"])
    model = build_pretrainer(config)
    weights = ph.weights_of(vec)
    ph.check_digest(vec, weights)
    mapping = ph.load_into(weights, model.encoder, model.head)
    epoch, values = _compile_at(model, config, vec)
    assert config.dynamic.strength(epoch, config.epochs) == pytest.approx(float(vec["strength"]))
    w = float(vec["weight"])
    np.testing.assert_allclose(model.stream_weights.numpy(), [1 - w, 1 + w], rtol=1e-7)
    _exact_stream_weights(monkeypatch, model, values)
    lr = float(model.optimizer.learning_rate)
    tol = STEP_TOL[precision]
    name = f"air step {precision} (epoch {epoch})"
    ph.check_close(f"{name}: learning rate of the update", lr, float(vec["lr"]), 1e-7)

    captured = _record_step(monkeypatch, model, vec, precision)
    before = {id(v): v.numpy().astype(np.float64) for v in model.weights}
    x = ph.input_of(vec, "x")
    view1, view2 = (v.astype(model.compute_dtype)
                    for v in _views(x.reshape((-1,) + x.shape[2:])))
    original = ph.nchw_to_nhwc(ph.input_of(vec, "original")).astype(model.compute_dtype)
    batch = ((tf.constant(view1), tf.constant(view2), tf.constant(original)),
             tf.zeros([len(view1)]))
    logs = model.train_step(batch)
    _check_x_adv(name, vec, captured, tol)
    for log, ref in (("loss", "loss"), ("clean_loss", "nat"), ("adv_loss", "adv"),
                     ("sir", "sir"), ("air", "air")):
        ph.check_close(f"{name}: {log} (AIR_Loss's {ref})", float(logs[log]), float(vec[ref]),
                       tol["loss"])
    keys = list(weights)
    _check_grads_and_update(name, vec, tol, captured, mapping, before, keys,
                            loose=FLOAT32_ILL_CONDITIONED["air"] if precision == "float32"
                            else {}, lr=lr if precision == "float64" else None)
    pairs = len(view1)
    _check_stats(f"{name} adv branch", vec, "stats", mapping, weights, 2 * pairs, tol,
                 only=lambda key: "bn_list.1." in key)
    _check_two_pass_stats(name, vec, mapping, weights, (2 * pairs, pairs), tol)
