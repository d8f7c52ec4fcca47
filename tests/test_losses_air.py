"""AIR's regularisers (:func:`acl_tf.losses.air_regularizers`) against an independent NumPy
reference (``numpy_refs.np_air_regularizers``), hand-computed cases, finite-difference gradients,
argument checks, and 2 replicas against one device.

TensorFlow's devices can be split only before it initialises and pytest runs every test file in
one process, so the 2-replica test runs this file as a script in a subprocess
(``python tests/test_losses_air.py``): it splits the CPU into 2 logical devices, compares
``MirroredStrategy`` with one device, and prints a JSON report as its last line of stdout.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from numpy_refs import np_air_regularizers

from acl_tf.losses import air_regularizers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DIVERGENCES = ("reference", "kl")


def _inputs(seed, n, d, dtype=np.float64):
    """z_i, z_j, z_orig, z_i_adv, z_j_adv: [n, d] each."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)).astype(dtype) for _ in range(5)]


def _values(*args, **kwargs):
    return [float(v) for v in air_regularizers(*args, **kwargs)]


# -- against the NumPy reference -----------------------------------------------------------------
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("n, d, temperature", [
    (1, 3, 0.5), (2, 4, 0.5), (5, 3, 0.1), (8, 16, 1.0), (32, 8, 0.5), (64, 128, 0.2)])
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float32, 1e-5, 1e-6),
                                               (np.float64, 1e-10, 1e-13)])
def test_matches_numpy_reference(n, d, temperature, divergence, dtype, rtol, atol):
    inputs = _inputs(n * d, n, d, dtype)
    sir, air = air_regularizers(*inputs, temperature=temperature, divergence=divergence)
    assert sir.dtype == air.dtype == tf.as_dtype(dtype)
    assert sir.shape == air.shape == ()
    expected = np_air_regularizers(*inputs, temperature, divergence)
    np.testing.assert_allclose([float(sir), float(air)], expected, rtol=rtol, atol=atol)
    if divergence == "kl":
        assert float(sir) >= -atol and float(air) >= -atol


# -- hand-computed cases -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 4, 7])
def test_identical_views_give_uniform_distributions(n):
    """All five projections equal (distinct images): every logit is <z_k, z_k> / t = 1 / t, so
    every softmax over the batch is uniform (1/N). Reference: sir = sum (1/N)(log(1/N) - 1/N)
    = -log N - 1/N (-1.6362943611198906 for N = 4, -1 for N = 1); c = 1/N^2 per image, so
    air = N (1/N^2)(log(1/N^2) - 1/N^2) = -(2 log N + 1/N^2) / N (-0.7087721805599453 for
    N = 4). KL: both 0."""
    z = _inputs(n, n, 5)[0]
    sir, air = _values(z, z, z, z, z, temperature=0.3)
    assert sir == pytest.approx(-math.log(n) - 1 / n, abs=1e-12)
    assert air == pytest.approx(-(2 * math.log(n) + 1 / n ** 2) / n, abs=1e-12)
    if n == 4:
        assert sir == pytest.approx(-1.6362943611198906, abs=1e-12)
        assert air == pytest.approx(-0.7087721805599453, abs=1e-12)
    assert _values(z, z, z, z, z, temperature=0.3, divergence="kl") == pytest.approx(
        [0.0, 0.0], abs=1e-12)


def test_two_images_by_hand():
    """N = 2, t = 1. z_orig = [e1, e2], z_i = [e1, e1] so a = [1, 0], p_i = [e, 1] / (1 + e);
    z_j = z_orig so b = [1, 1], p_j = [1/2, 1/2]; z_i_adv = z_i, z_j_adv = z_j so
    u_i = [1, 1], v_i = a, c_i = p_i / 2, and u_j = v_j = [1, 1], c_j = [1/4, 1/4].

    reference: sir = sum_k 1/2 (log 1/2 - p_i,k) = -log 2 - 1/2 = -1.1931471805599454 (p_j is
    uniform, so p_i drops out); air = sum_k 1/4 (log 1/4 - p_i,k / 2) = -log 2 - 1/8
    = -0.8181471805599453.
    kl: sir = KL(uniform || p_i) = -log 2 - (log p_i,1 + log p_i,2) / 2 = log((1 + e) / 2) - 1/2
    = 0.12011450695827752; c_i / sum c_i = p_i and c_j / sum c_j = uniform, so air = sir.
    """
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    z_orig = np.array([e1, e2])
    z_i = np.array([e1, e1])
    args = (z_i, z_orig, z_orig, z_i, z_orig)
    sir, air = _values(*args, temperature=1.0)
    assert sir == pytest.approx(-math.log(2) - 0.5, abs=1e-12)
    assert sir == pytest.approx(-1.1931471805599454, abs=1e-12)
    assert air == pytest.approx(-math.log(2) - 0.125, abs=1e-12)
    kl_sir, kl_air = _values(*args, temperature=1.0, divergence="kl")
    assert kl_sir == pytest.approx(math.log((1 + math.e) / 2) - 0.5, abs=1e-12)
    assert kl_sir == pytest.approx(0.12011450695827752, abs=1e-12)
    assert kl_air == pytest.approx(kl_sir, abs=1e-12)


# -- properties ----------------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_invariances_graph_mode_and_dtypes(divergence):
    """Invariant to positive row scales (the rows are normalised) and to a joint permutation of
    the batch (what lets replicas gather in any order); the same in a tf.function; half
    precision is widened to float32."""
    inputs = _inputs(3, 6, 4)
    expected = _values(*inputs, temperature=0.5, divergence=divergence)
    scales = np.random.default_rng(4).uniform(0.1, 10.0, size=(6, 1))
    scaled = [z * scales for z in inputs]
    assert _values(*scaled, temperature=0.5, divergence=divergence) == pytest.approx(
        expected, rel=1e-12, abs=1e-14)
    order = np.random.default_rng(5).permutation(6)
    permuted = [z[order] for z in inputs]
    assert _values(*permuted, temperature=0.5, divergence=divergence) == pytest.approx(
        expected, rel=1e-12, abs=1e-14)
    graph = tf.function(lambda *z: air_regularizers(*z, temperature=0.5, divergence=divergence))
    assert [float(v) for v in graph(*inputs)] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    half = air_regularizers(*[z.astype(np.float16) for z in inputs], divergence=divergence)
    assert half[0].dtype == half[1].dtype == tf.float32


def test_zero_row_is_normalised_like_f_normalize():
    """A zero projection stays zero (F.normalize divides by max(||z||, 1e-12)): its logits are
    0, and the values and gradients stay finite."""
    inputs = _inputs(6, 4, 3)
    inputs[2][1] = 0.0      # z_orig of image 1
    inputs[3][2] = 0.0      # z_i_adv of image 2
    for divergence in DIVERGENCES:
        variables = [tf.Variable(z) for z in inputs]
        with tf.GradientTape() as tape:
            sir, air = air_regularizers(*variables, temperature=0.5, divergence=divergence)
            total = sir + air
        np.testing.assert_allclose([float(sir), float(air)],
                                   np_air_regularizers(*inputs, 0.5, divergence), rtol=1e-10)
        assert all(np.isfinite(g.numpy()).all() for g in tape.gradient(total, variables))


def test_kl_is_the_kl_of_the_reference_direction():
    """divergence="kl" of the SIR is KL(p_j || p_i): swapping z_i and z_j gives KL(p_i || p_j),
    generally a different number, also matched by the reference with swapped views."""
    z_i, z_j, z_orig, z_i_adv, z_j_adv = _inputs(9, 5, 3)
    forward = _values(z_i, z_j, z_orig, z_i_adv, z_j_adv, temperature=0.2, divergence="kl")
    backward = _values(z_j, z_i, z_orig, z_j_adv, z_i_adv, temperature=0.2, divergence="kl")
    assert abs(forward[0] - backward[0]) > 1e-4
    np.testing.assert_allclose(
        backward, np_air_regularizers(z_j, z_i, z_orig, z_j_adv, z_i_adv, 0.2, "kl"),
        rtol=1e-10)


# -- gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradients_match_central_differences(divergence):
    """The gradient of sir and of air w.r.t. each of the five inputs (float64) against central
    finite differences (step 1e-6) of the NumPy reference."""
    inputs = _inputs(11, 5, 3)
    temperature = 0.5
    variables = [tf.Variable(z) for z in inputs]
    with tf.GradientTape(persistent=True) as tape:
        sir, air = air_regularizers(*variables, temperature=temperature, divergence=divergence)
    h = 1e-6
    for which, value in enumerate((sir, air)):
        grads = tape.gradient(value, variables)
        for k, (z, grad) in enumerate(zip(inputs, grads)):
            assert grad is not None, f"no gradient into input {k}"
            numeric = np.zeros_like(z)
            for idx in np.ndindex(*z.shape):
                plus, minus = [list(inputs) for _ in range(2)]
                plus[k], minus[k] = z.copy(), z.copy()
                plus[k][idx] += h
                minus[k][idx] -= h
                numeric[idx] = (np_air_regularizers(*plus, temperature, divergence)[which]
                                - np_air_regularizers(*minus, temperature, divergence)[which]
                                ) / (2 * h)
            np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8,
                                       err_msg=f"{('sir', 'air')[which]} w.r.t. input {k}")
    del tape


# -- argument checks -----------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be positive"):
        air_regularizers(*_inputs(0, 2, 3), temperature=temperature)


@pytest.mark.parametrize("divergence", ["js", "", None, "kl_div"])
def test_bad_divergence(divergence):
    with pytest.raises(ValueError, match="Unknown AIR divergence"):
        air_regularizers(*_inputs(0, 2, 3), divergence=divergence)


def test_divergence_is_case_insensitive():
    inputs = _inputs(1, 3, 2)
    assert _values(*inputs, divergence="KL") == _values(*inputs, divergence="kl")


# -- 2 replicas vs one device (this file as a subprocess; see the module docstring) -------------
def test_mirrored_replicas_combine_to_single_device():
    """Under MirroredStrategy over 2 logical CPUs, each replica holding half of an 8-image
    batch: both replicas return the single-device (sir, air) of the whole batch (so their mean
    is it), and with the loss divided by the number of replicas the input gradients of each
    replica's rows and the replica-summed weight gradient equal the single-device ones."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for case, r in report["cases"].items():
        tol = 1e-12 if case.startswith("float64") else 1e-5
        scale = max(1.0, r["value_max"])
        assert r["replica_value_diff"] <= tol * scale, (case, r)
        assert r["mean_value_diff"] <= tol * scale, (case, r)
        assert r["grad_w_diff"] <= tol * max(1.0, r["grad_w_max"]), (case, r)
        assert r["grad_x_diff"] <= tol * max(1.0, r["grad_x_max"]), (case, r)
        assert r["grad_w_max"] > 1e-3 and r["grad_x_max"] > 1e-3, (case, r)   # not vacuous


def _mirrored_worker() -> dict:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    replicas = strategy.num_replicas_in_sync
    lambda1, lambda2 = 0.5, 2.0

    def shards(array):
        half = len(array) // replicas
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: array[ctx.replica_id_in_sync_group * half:
                              (ctx.replica_id_in_sync_group + 1) * half])

    def local(value):
        return [np.asarray(v) for v in strategy.experimental_local_results(value)]

    cases = {}
    for dtype in (np.float32, np.float64):
        for divergence in DIVERGENCES:
            xs = _inputs(7, 8, 5, dtype)
            w_init = np.random.default_rng(8).normal(size=(5, 4)).astype(dtype)

            w = tf.Variable(w_init)
            inputs = [tf.constant(x) for x in xs]
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(inputs)
                single = air_regularizers(*[x @ w for x in inputs], 0.5, divergence)
                total = lambda1 * single[0] + lambda2 * single[1]
            grad_w = tape.gradient(total, w).numpy()
            grad_x = [g.numpy() for g in tape.gradient(total, inputs)]
            single = np.array([float(v) for v in single])

            with strategy.scope():
                w2 = tf.Variable(w_init)

            def step(*rows, w2=w2, divergence=divergence):
                with tf.GradientTape() as tape:
                    tape.watch(rows)
                    sir, air = air_regularizers(*[x @ w2 for x in rows], 0.5, divergence)
                    scaled = (lambda1 * sir + lambda2 * air) / replicas
                g_w, *g_x = tape.gradient(scaled, [w2, *rows])
                g_w = tf.distribute.get_replica_context().all_reduce("sum", g_w)
                return tf.stack([sir, air]), g_w, tf.stack(g_x)

            values, g_w, g_x = tf.function(lambda *a: strategy.run(step, args=a))(
                *[shards(x) for x in xs])
            values, g_w, g_x = local(values), local(g_w), local(g_x)
            grad_x_mirrored = np.concatenate(g_x, axis=1)        # [5, 8, 5]: rows by replica
            cases[f"{np.dtype(dtype).name}_{divergence}"] = {
                "value_max": float(np.abs(single).max()),
                "replica_value_diff": float(max(np.abs(v - single).max() for v in values)),
                "mean_value_diff": float(np.abs(np.mean(values, axis=0) - single).max()),
                "grad_w_max": float(np.abs(grad_w).max()),
                "grad_w_diff": float(max(np.abs(g - grad_w).max() for g in g_w)),
                "grad_x_max": float(np.abs(grad_x).max()),
                "grad_x_diff": float(np.abs(grad_x_mirrored - np.stack(grad_x)).max()),
            }
    return {"replicas": replicas, "cases": cases}


if __name__ == "__main__":
    print(json.dumps(_mirrored_worker()))
