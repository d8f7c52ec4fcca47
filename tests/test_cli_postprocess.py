"""The post-processing command line (acl_tf.cli.postprocess): its flags and help, usage errors,
and a run on the shipped sample through ``acl-tf postprocess``, resumed from its own config."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import PROJECT_ROOT, SAMPLE_DIR

FLAGS = {"--config", "--set", "--model_dir", "--resume", "--model"}
TINY = [f"data.source={SAMPLE_DIR}", "data.limit=64", "batch_size=32", "eval_batch_size=64",
        "clusters.num_clusters=4", "aft.attack.steps=1"]


def run_python(*args, timeout=400):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def acl_tf(*args, timeout=400):
    """``acl-tf postprocess ARGS`` (the installed entry point's main)."""
    code = "import sys; from acl_tf.cli.main import main; main(['acl-tf', *sys.argv[1:]])"
    return run_python("-c", code, "postprocess", *args, timeout=timeout)


def listed_flags(text):
    return {line.split(":")[0].strip().replace("--[no]", "--") for line in text.splitlines()
            if line.strip().startswith("--")}


def test_help_lists_the_flags_and_imports_no_tensorflow():
    proc = run_python("-m", "acl_tf.postprocess", "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("DynACL++ post-processing of a pre-trained encoder")
    assert listed_flags(proc.stdout) == FLAGS
    assert "cifar10_dynacl, cifar10_dynacl_air, smoke" in proc.stdout
    script = textwrap.dedent("""
        import sys
        from acl_tf.cli.main import main
        try:
            main(["acl-tf", "postprocess", "--help"])
        finally:
            print("tensorflow imported:", "tensorflow" in sys.modules)
    """)
    proc = run_python("-c", script)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("tensorflow imported: False")
    assert listed_flags(proc.stdout) == FLAGS
    proc = run_python("-c", "from acl_tf.cli.main import main; main(['acl-tf', '--help'])")
    assert "postprocess" in proc.stdout


def test_usage_errors_exit_2(tmp_path):
    # Flags and configs are checked before TensorFlow loads (each answer in a fraction of a
    # second); the encoder after.
    script = ("import sys; from acl_tf.cli.main import main\n"
              "try:\n    main(['acl-tf', 'postprocess', *sys.argv[1:]])\n"
              "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules)")
    for args, message in ((["--model=x"], "--model_dir is required"),
                          (["--config=nope", f"--model_dir={tmp_path / 'a'}"],
                           "Unknown postprocess config 'nope'"),
                          (["--config=smoke", f"--model_dir={tmp_path / 'b'}"],
                           "needs a pre-trained encoder")):
        proc = run_python("-c", script, *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stdout.rstrip().endswith("tensorflow imported: False")
    proc = acl_tf("--config=smoke", f"--model={tmp_path}", f"--model_dir={tmp_path / 'c'}")
    assert proc.returncode == 2 and "has no encoder.keras" in proc.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_run_on_the_sample_then_resume(tmp_path):
    from acl_tf.models import ResNet18

    encoder = ResNet18(width=8, dual_bn=True)
    encoder(np.zeros((1, 32, 32, 3), np.float32))
    (tmp_path / "pre").mkdir()
    encoder.save(tmp_path / "pre" / "encoder.keras")
    out = tmp_path / "pp"
    proc = acl_tf("--config=smoke", f"--model={tmp_path / 'pre'}", f"--model_dir={out}",
                  *[f"--set={s}" for s in TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 clusters of sizes" in proc.stdout and "adversarial accuracy" in proc.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["finished"] and sum(summary["cluster_sizes"]) == 64
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["width"] == 8 and saved["pretrained"] == str(tmp_path / "pre")
    for name in ("encoder.keras", "cluster_labels.npz", "clusters.json", "linear_probe/last.keras",
                 "aft/last.keras", "aft/history.json"):
        assert (out / name).exists(), name
    # --resume reads the run's config (no --model, no --config) and finds nothing left to do.
    proc = acl_tf(f"--model_dir={out}", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 clusters of sizes" in proc.stdout
    proc = acl_tf(f"--model={tmp_path / 'pre'}", f"--model_dir={out}",
                  *[f"--set={s}" for s in TINY])
    assert proc.returncode == 2 and "--resume" in proc.stderr
