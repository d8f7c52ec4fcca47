"""``python -m acl_tf.evaluate`` (acl_tf.cli.evaluate) on the shipped sample: the report, its
markdown and plot, and the exit status of a bad model path."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import make_tiny_classifier


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_cli_on_the_shipped_sample(tmp_path, sample_dir, project_root):
    from acl_tf.data import load
    from acl_tf.evaluation.robustness import predict_labels

    classifier = make_tiny_classifier(seed=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    classifier.save(run_dir / "best.keras")
    output = tmp_path / "eval" / "report.json"
    cmd = [sys.executable, "-m", "acl_tf.evaluate", f"--model={run_dir}", "--config=smoke",
           f"--data={sample_dir}", "--limit=8", "--attacks=clean,pgd3", "--bn=normal",
           "--eps_sweep=0,8,64", f"--output={output}"]
    proc = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads(output.read_text())
    assert report["model"] == str(run_dir / "best.keras")
    assert report["branch"] == "normal" and report["num_examples"] == 8
    assert [a["name"] for a in report["attacks"]] == ["clean", "pgd3"]
    assert report["attacks_run"][1].startswith("pgd3: PGD Linf eps 8/255, step 2/255, 3 steps")
    assert report["settings"]["data"]["limit"] == 8
    assert report["versions"]["tensorflow"] == tf.__version__
    data = load(str(sample_dir), split="test", limit=8)
    expected = np.mean(predict_labels(classifier, data.to_float(), branch="normal")
                       == data.labels)
    assert report["accuracies"]["clean"] == pytest.approx(expected)
    assert report["accuracies"]["pgd3"] <= report["accuracies"]["clean"]
    assert [p["epsilon_255"] for p in report["accuracy_vs_epsilon"]] == pytest.approx([0, 8, 64])
    assert report["accuracy_vs_epsilon"][0]["accuracy"] == pytest.approx(expected)
    assert {g["name"]: g["status"] in ("pass", "warn") for g in report["guards"]} == {
        "steps": True, "epsilon": True, "large_epsilon": True, "autoattack_vs_pgd": False}
    assert [r["name"] for r in report["guard_runs"]] == ["pgd2 (steps check)"]
    markdown = (output.parent / "report.md").read_text()
    assert "| pgd3 |" in markdown and "## Gradient-masking checks" in markdown
    assert (output.parent / "accuracy_vs_epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = subprocess.run([sys.executable, "-m", "acl_tf.evaluate", f"--model={tmp_path}",
                          f"--output={tmp_path / 'r.json'}"], cwd=project_root,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no best.keras" in bad.stderr
