"""``python -m acl_tf.bench`` (acl_tf.cli.bench): the quick benchmark writes every figure, the table
re-renders from the JSON, bad settings are clear errors.

No timing assertions: timed targets live in ``benchmarks/README.md``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from acl_tf.configs import BenchConfig, ConfigError, load_config
from acl_tf.tasks import bench as benchmark


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_bench_writes_every_figure(tmp_path):
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, "-m", "acl_tf.bench", "--quick", "--width=4", "--batch_size=8",
           "--steps=2", "--warmup_steps=0", "--set=pipeline_images=32", "--variants=s2s,ds",
           "--methods=dynacl_air",
           f"--output={out}", f"--markdown={table}"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["variants"]) == {"s2s", "ds", "dynacl_air"}
    assert results["variants"]["dynacl_air"]["variant"] == "ds"
    assert results["method_over_ds_time_ratio"]["dynacl_air"] == pytest.approx(
        results["variants"]["dynacl_air"]["seconds_per_step"]
        / results["variants"]["ds"]["seconds_per_step"], rel=0.01)
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
    assert "| dynacl_air |" in text and "Methods (on DS) over ACL's DS step: dynacl_air" in text

    # The table can be re-rendered from the JSON alone.
    proc = subprocess.run([sys.executable, "-m", "acl_tf.bench", f"--from_json={out}",
                           "--markdown=-"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == text.strip()


def test_bad_bench_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="precision"):
        load_config(BenchConfig, "bench", "quick", ["precision=float64"])
    with pytest.raises(ConfigError, match="ACL itself is timed through variants"):
        load_config(BenchConfig, "bench", "quick", ["methods=[acl]"])
    with pytest.raises(ConfigError, match="Unknown pre-training method"):
        load_config(BenchConfig, "bench", "quick", ["methods=[simclr]"])
    with pytest.raises(ConfigError, match="Unknown ACL variant"):
        benchmark.check_config(BenchConfig(variants=("s2s", "simclr")))
    proc = subprocess.run([sys.executable, "-m", "acl_tf.bench", "--quick", "--variants=xyz",
                           "--output=/dev/null"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "xyz" in proc.stderr
