"""acl_tf.tasks.bench: the benchmark's table, the floor (a plain Keras ResNet-18) and the trace
counter (one trace per step function).

No timing assertions: timed targets live in ``benchmarks/README.md``.
"""

import numpy as np
import pytest
import tensorflow as tf
from tiny_pretrainer import make_pretrainer, views

from acl_tf.configs import BenchConfig, load_config
from acl_tf.tasks import bench as benchmark


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


def test_the_machine_records_the_environment_tensorflow_runs_under(monkeypatch):
    """oneDNN, thread and XLA settings are environment variables read when TensorFlow starts:
    the results record those set, and the table names them."""
    monkeypatch.setenv("TF_SET_ONEDNN_FPMATH_MODE", "BF16")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    monkeypatch.setenv("ACL_TF_UNRELATED", "x")
    machine = benchmark.machine_info()
    env = machine["environment"]
    assert env["TF_SET_ONEDNN_FPMATH_MODE"] == "BF16" and env["TF_NUM_INTEROP_THREADS"] == "1"
    assert "ACL_TF_UNRELATED" not in env and "TF_CPP_MIN_LOG_LEVEL" not in env
    results = {"settings": {"width": 8, "batch_size": 4, "precision": "float32",
                            "jit_compile": False, "steps": 1, "warmup_steps": 0},
               "machine": {**machine, "environment": {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"}},
               "variants": {}}
    assert "oneDNN on, TF_SET_ONEDNN_FPMATH_MODE=BF16." in benchmark.render_markdown(
        {**results, "machine": {**results["machine"], "onednn": True}})


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
    model = make_pretrainer("s2s")
    model.optimizer.build(model.trainable_variables)
    counter = benchmark.TraceCounter(model)
    model.make_train_function()
    for batch in (4, 4, 6):
        v1, v2 = views(batch)
        it = iter(tf.data.Dataset.from_tensors(((v1, v2), np.zeros(batch))).repeat())
        model.train_function(it)
    assert counter.count == 2  # a new batch size is a new shape


def test_fit_traces_the_step_once_across_epochs():
    model = make_pretrainer("ds")
    counter = benchmark.TraceCounter(model)
    v1, v2 = views(4)
    data = tf.data.Dataset.from_tensor_slices(((v1, v2), np.zeros(4))).repeat(2).batch(4)
    model.fit(data, epochs=2, verbose=0)
    model.fit(data, initial_epoch=2, epochs=3, verbose=0)
    assert counter.count == 1
