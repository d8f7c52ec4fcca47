"""The throughput benchmark (``python -m acl_tf.bench``) and what makes the step fast.

No timing assertions: timed targets live in ``benchmarks/README.md``.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import PROJECT_ROOT

from acl_tf.attacks import PGDConfig, pgd_linf
from acl_tf.configs import BenchConfig, ConfigError, load_config
from acl_tf.losses import nt_xent
from acl_tf.models import ProjectionHead, ResNet18
from acl_tf.tasks import bench as benchmark
from acl_tf.trainers.pretrainer import ACLPretrainer

EPS = 8 / 255


def make(variant, width=4, optimizer=None, attack_steps=2, **kwargs):
    dual = variant in ("a2s", "ds")
    model = ACLPretrainer(ResNet18(width=width, dual_bn=dual), ProjectionHead(16, 8, dual_bn=dual),
                          variant=variant, attack=PGDConfig(steps=attack_steps), **kwargs)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1))
    model(np.zeros((2, 32, 32, 3), np.float32))
    return model


def views(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((2, batch, 32, 32, 3), dtype=np.float32)


@pytest.fixture
def restore_policy():
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.e2e
def test_quick_bench_writes_every_figure(tmp_path):
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, "-m", "acl_tf.bench", "--quick", "--width=4", "--batch_size=8",
           "--steps=2", "--warmup_steps=0", "--set=pipeline_images=32",
           f"--output={out}", f"--markdown={table}"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["variants"]) == {"s2s", "a2a", "a2s", "ds"}
    for name, r in results["variants"].items():
        for key in benchmark.RESULT_KEYS:
            assert r[key] > 0, (name, key)
        assert r["traces"] == 1, f"{name} retraced: {r['traces']} traces"
        assert len(r["step_times"]) == 2 and np.isfinite(r["loss"])
        assert r["images_per_s"] == pytest.approx(8 / r["seconds_per_step"], rel=0.01)
    assert results["ds_over_s2s_time_ratio"] == pytest.approx(
        results["variants"]["ds"]["seconds_per_step"]
        / results["variants"]["s2s"]["seconds_per_step"], rel=0.01)
    pipe = results["input_pipeline"]
    assert pipe["images_per_s"] > 0 and pipe["decode_images_per_s"] > 0 and pipe["images"] >= 32
    assert set(results["pipeline_share_of_step"]) == set(results["variants"])
    assert results["machine"]["cores"] >= 1 and results["settings"]["width"] == 4
    floor = results["floor"]
    assert floor["ds_floor_s"] > floor["s2s_floor_s"] > 0 and floor["views"] == 16
    assert floor["ds_over_floor"] == pytest.approx(
        results["variants"]["ds"]["seconds_per_step"] / floor["ds_floor_s"], rel=0.01)
    text = table.read_text()
    assert "| ds |" in text and "ds_over_s2s_time_ratio" in text and "Floor (" in text

    # The table can be re-rendered from the JSON alone.
    proc = subprocess.run([sys.executable, "-m", "acl_tf.bench", f"--from_json={out}",
                           "--markdown=-"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == text.strip()


def test_bad_bench_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="precision"):
        load_config(BenchConfig, "bench", "quick", ["precision=float64"])
    with pytest.raises(ConfigError, match="Unknown ACL variant"):
        benchmark.check_config(BenchConfig(variants=("s2s", "simclr")))
    proc = subprocess.run([sys.executable, "-m", "acl_tf.bench", "--quick", "--variants=xyz",
                           "--output=/dev/null"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "xyz" in proc.stderr


def test_render_markdown_lists_every_variant():
    results = {
        "settings": {"width": 64, "batch_size": 64, "precision": "float32", "jit_compile": False,
                     "steps": 5, "warmup_steps": 2},
        "machine": {"cpu": "CPU", "cores": 2, "gpus": [], "tensorflow": "2.16.2",
                    "keras": "3.12.4", "onednn": True, "load_at_start": 0.1, "load_at_end": 0.2},
        "variants": {v: {"seconds_per_step": s, "images_per_s": 64 / s, "views_per_s": 128 / s,
                         "peak_memory_mb": 1900.0, "traces": 1}
                     for v, s in (("s2s", 1.0), ("ds", 5.0))},
        "ds_over_s2s_time_ratio": 5.0,
        "floor": {"train_pass_s": 0.8, "attack_pass_s": 0.5, "attack_steps": 5,
                  "s2s_floor_s": 0.8, "ds_floor_s": 4.1, "ds_over_s2s_floor_ratio": 5.125,
                  "views": 128, "s2s_over_floor": 1.25, "ds_over_floor": 1.22},
    }
    text = benchmark.render_markdown(results)
    assert "| s2s | 1.000 | 64.0 | 128.0 | - | 1900 | 1 |" in text
    assert "| ds | 5.000 | 12.8 |" in text and "= 5.00" in text and "no GPU" in text
    assert ("training pass 0.800 s, attack pass 0.500 s, so S2S >= 0.800 s and DS >= 5 attack "
            "+ 2 training passes = 4.100 s (ratio 5.12); measured step / floor: s2s 1.25x, "
            "ds 1.22x.") in text


# -- the floor: a plain Keras ResNet-18 ------------------------------------------------------------
def test_plain_resnet18_has_the_encoders_convolutions():
    from acl_tf.models import build_encoder

    ours = build_encoder("resnet18", 8, dual_bn=False)
    ours(np.zeros((1, 32, 32, 3), np.float32))
    plain = benchmark.plain_resnet18(8)

    def kernels(model):
        return sorted(tuple(w.shape) for w in model.weights if len(w.shape) == 4)

    assert kernels(plain) == kernels(ours) and len(kernels(plain)) == 20
    assert plain.count_params() == ours.count_params()


def test_floor_adds_up_the_passes_of_a_step(restore_policy):
    config = load_config(BenchConfig, "bench", "quick",
                         ["width=4", "batch_size=4", "steps=1", "warmup_steps=0"])
    floor = benchmark.measure_floor(config)
    assert floor["views"] == 8 and floor["attack_steps"] == 5
    assert floor["s2s_floor_s"] == floor["train_pass_s"] > 0
    assert floor["ds_floor_s"] == pytest.approx(
        5 * floor["attack_pass_s"] + 2 * floor["train_pass_s"], abs=1e-3)


# -- one trace per step function -------------------------------------------------------------------
def test_trace_counter_sees_every_retrace():
    model = make("s2s")
    model.optimizer.build(model.trainable_variables)
    counter = benchmark.TraceCounter(model)
    model.make_train_function()
    for batch in (4, 4, 6):
        v1, v2 = views(batch)
        it = iter(tf.data.Dataset.from_tensors(((v1, v2), np.zeros(batch))).repeat())
        model.train_function(it)
    assert counter.count == 2  # a new batch size is a new shape


def test_fit_traces_the_step_once_across_epochs():
    model = make("ds")
    counter = benchmark.TraceCounter(model)
    v1, v2 = views(4)
    data = tf.data.Dataset.from_tensor_slices(((v1, v2), np.zeros(4))).repeat(2).batch(4)
    model.fit(data, epochs=2, verbose=0)
    model.fit(data, initial_epoch=2, epochs=3, verbose=0)
    assert counter.count == 1


# -- the DS step computes its gradient one stream at a time ----------------------------------------
@pytest.mark.parametrize("average,alpha", [(False, 1.0), (True, 0.5)])
def test_ds_step_equals_one_gradient_of_the_summed_loss(average, alpha):
    """The streams' gradients, summed, update the model as one gradient of the DS loss does.

    The adversarial views are the (seeded, identical) random starts: PGD's sign steps would turn
    rounding differences of two thread-parallel computations into different views now and then.
    """
    fast = make("ds", ds_alpha=alpha, ds_average=average, attack_steps=0)
    reference = make("ds", ds_alpha=alpha, ds_average=average, attack_steps=0)
    before = fast.get_weights()
    reference.set_weights(before)
    v1, v2 = views(4)
    logs = fast.train_on_batch((v1, v2), np.zeros(4), return_dict=True)

    @tf.function
    def reference_step():
        with tf.GradientTape() as tape:
            total, _ = reference.compute_losses(tf.constant(v1), tf.constant(v2))
        variables = reference.trainable_variables
        reference.optimizer.apply(tape.gradient(total, variables), variables)
        return total

    total = reference_step()
    assert logs["loss"] == pytest.approx(float(total), rel=1e-5)
    # Every weight and moving statistic moves by the same amount (up to float32 rounding).
    # Biases followed by BN have a zero gradient, so their moves are pure rounding (~1e-7):
    # the absolute tolerance sits well above that and far below a real step (~1e-2 here).
    largest = max(np.abs(b - w0).max() for b, w0 in zip(reference.get_weights(), before))
    assert largest > 1e-3
    for a, b, w0, var in zip(fast.get_weights(), reference.get_weights(), before, fast.weights):
        moved_fast, moved_ref = a - w0, b - w0
        assert np.abs(moved_fast - moved_ref).max() <= 1e-3 * np.abs(moved_ref).max() + 1e-6, \
            var.path


# -- mixed precision keeps the attack's arithmetic float32 -----------------------------------------
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_attack_stays_float32_within_eps(policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = make("ds", width=8)
    model.optimizer.build(model.trainable_variables)
    bn = model.encoder.stem_bn.bn_adv
    assert bn.moving_mean.dtype == "float32" and bn.gamma.dtype == "float32"
    v1, v2 = (tf.constant(v) for v in views(4))
    x_adv = model.adversarial_views(v1, v2)
    clean = tf.concat([v1, v2], 0)
    assert x_adv.dtype == tf.float32
    delta = np.abs(x_adv.numpy() - clean.numpy())
    assert delta.max() <= EPS + 1e-6 and delta.max() > EPS / 2
    assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
    z = model(x_adv, training=False, branch="adv")
    assert z.dtype == (tf.bfloat16 if policy == "mixed_bfloat16" else tf.float16)
    assert nt_xent(z[:4], z[4:]).dtype == tf.float32
    # float16 compute: the attack differentiates the loss times the optimiser's loss scale.
    scale = model._attack_loss_scale()
    assert (scale is not None) == (policy == "mixed_float16")


def test_pgd_loss_scale_rescues_underflowing_gradients():
    """A float16 gradient of 1e-4 * 1e-4 underflows to 0 (no step); scaled by 2^15 it does not."""
    x = tf.fill([2, 3], 0.5)
    small = tf.constant(1e-4, tf.float16)

    def loss_fn(x_adv):
        return tf.cast(tf.reduce_sum(tf.cast(x_adv, tf.float16) * small * small), tf.float32)

    config = PGDConfig(steps=1, random_start="none")
    unscaled = pgd_linf(loss_fn, x, config)
    scaled = pgd_linf(loss_fn, x, config, loss_scale=2.0 ** 15)
    np.testing.assert_array_equal(unscaled, x)
    np.testing.assert_allclose(scaled, x + config.step_size, rtol=1e-6)
    # A scale that overflows: an infinite gradient still gives its sign ...
    def big(v):
        return tf.reduce_sum(tf.cast(v, tf.float16) * tf.constant(1e4, tf.float16))

    overflow = pgd_linf(lambda v: tf.cast(big(v), tf.float32), x, config, loss_scale=1e30)
    np.testing.assert_allclose(overflow, x + config.step_size, rtol=1e-6)
    # ... and a NaN one (inf - inf) leaves the pixel in place instead of making it NaN.
    nan = pgd_linf(lambda v: tf.cast(big(v) - big(v), tf.float32), x, config, loss_scale=1e30)
    np.testing.assert_array_equal(nan, x)


def test_pgd_loss_scale_does_not_change_a_float32_attack():
    model = make("a2a")
    v1, v2 = views(4)
    x = tf.concat([v1, v2], 0)

    def loss_fn(x_adv):
        z = model(x_adv, training=False, branch="adv")
        return nt_xent(z[:4], z[4:])

    seed = tf.constant([3, 4], tf.int64)
    plain = pgd_linf(loss_fn, x, PGDConfig(steps=3), seed=seed)
    scaled = pgd_linf(loss_fn, x, PGDConfig(steps=3), seed=seed, loss_scale=1024.0)
    np.testing.assert_array_equal(plain, scaled)
