"""The speed comparison's driver (``scripts/parity/compare_speed.py``) without running anything:
its settings, its order of processes, its summary and table. It imports neither TensorFlow nor
PyTorch; the timed processes themselves are ``acl_tf.bench`` (tested in test_tasks_bench.py)
and the reference's step (run only where the reference and PyTorch are)."""

import importlib.util
from types import SimpleNamespace

import pytest
from conftest import PROJECT_ROOT

_spec = importlib.util.spec_from_file_location(
    "compare_speed", PROJECT_ROOT / "scripts" / "parity" / "compare_speed.py")
compare_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_speed)


def test_extra_settings_split_into_environment_and_flags():
    assert compare_speed.parse_extra("bf16=TF_SET_ONEDNN_FPMATH_MODE=BF16 --inter_op_threads=1") \
        == {"label": "bf16", "env": {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"},
            "flags": ["--inter_op_threads=1"]}
    for bad in ("nolabel", "x=", "x=lowercase=1", "bad label=--jit_compile"):
        with pytest.raises(ValueError, match="--extra"):
            compare_speed.parse_extra(bad)


def test_rounds_alternate_the_order_of_configurations():
    extras = [compare_speed.parse_extra("off=TF_ENABLE_ONEDNN_OPTS=0")]
    plan = [(r, v, c["name"]) for r, v, c in compare_speed.schedule(["s2s"], extras, 2)]
    assert plan == [(0, "s2s", "reference"), (0, "s2s", "acl-tf"), (0, "s2s", "acl-tf off"),
                    (1, "s2s", "acl-tf off"), (1, "s2s", "acl-tf"), (1, "s2s", "reference")]


def test_shared_environment_keeps_only_what_changes_the_arithmetic():
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "HOME": "/root",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2", "PATH": "/bin"}
    assert compare_speed.shared_environment(environ) == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _run(r, variant, config, impl, seconds, env=None):
    return {"round": r, "variant": variant, "config": config, "impl": impl, "env": env or {},
            "flags": [], "load_before": 0.5, "seconds_per_step": seconds,
            "cpu_seconds_per_step": 2 * seconds, "peak_memory_mb": 1000.0, "first_step_s": 9.0,
            "machine": {"cpu": "Test CPU", "cores": 2}}


def test_summary_ratios_and_table(monkeypatch):
    for name in compare_speed.shared_environment():  # (the tests' own, e.g. oneDNN off)
        monkeypatch.delenv(name)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    extras = [compare_speed.parse_extra("off=TF_ENABLE_ONEDNN_OPTS=0")]
    off = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    runs = []
    for r, (ref, mine, slow) in enumerate([(4.0, 3.0, 6.0), (6.0, 5.0, 8.0)]):
        runs += [_run(r, "s2s", "reference", "reference", ref),
                 _run(r, "s2s", "acl-tf", "acl-tf", mine),
                 _run(r, "s2s", "acl-tf off", "acl-tf", slow, off)]
    args = SimpleNamespace(variants=["s2s"], batch_size=64, warmup_steps=1, steps=3, rounds=2)
    results = compare_speed.results_of(args, runs, extras, True)
    rows = results["summary"]["configurations"]["s2s"]
    # medians over the two rounds: reference 5.0, acl-tf 4.0, off 7.0
    assert rows["reference"]["seconds_per_step"] == 5.0
    assert rows["acl-tf"]["over_reference"] == 0.8
    assert rows["acl-tf off"]["over_reference"] == 1.4
    assert rows["acl-tf"]["images_per_s"] == 16.0
    assert results["settings"]["environment"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    table = compare_speed.render_markdown(results)
    assert "Set for every process (both sides): `ONEDNN_MAX_CPU_ISA=AVX2`." in table
    assert "| s2s | acl-tf off (`TF_ENABLE_ONEDNN_OPTS=0`) | 7.000 | 6.000, 8.000 |" in table
    assert table.count("| s2s |") == 3
