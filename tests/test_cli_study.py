"""``python -m acl_tf.study`` (acl_tf.cli.study): an end-to-end run of the smoke study (report,
resume) and an unknown config."""

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from acl_tf.configs import StudyConfig, load_config
from acl_tf.studies import reproduction as study


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "acl_tf.study", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_study_runs_reports_and_resumes(tmp_path):
    runs, report_dir = tmp_path / "runs", tmp_path / "report"
    proc = run_cli("--config=smoke", f"--model_dir={runs}", f"--report_dir={report_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = study.plan(load_config(StudyConfig, "study", "smoke"))
    for stage in stages:
        assert (runs / stage.name / study.STAGE_FILE).exists(), stage.name
    report = json.loads((report_dir / "study.json").read_text())
    assert all(report["stages"].values())
    results = report["results"]
    assert set(results["table3"]) == {"ri", "ds", "s2s"}
    assert set(results["table4"]) == {"ds/single", "ds/normal", "ds/adv"}
    assert [(r["protocol"], r["bn"]) for r in results["table5"]["ds"]] == [
        ("SLF", "adv"), ("SLF", "normal"), ("ALF", "adv"), ("ALF", "normal")]
    for row in results["table3"].values():
        assert row["test_images"] == 40 and 0 <= row["ra"] <= row["ta"] <= 1
    text = (report_dir / "study.md").read_text()
    assert "Table 3" in text and "Table 4" in text and "Table 5" in text
    assert (report_dir / "ra_per_epoch.png").stat().st_size > 0
    assert (report_dir / "ta_ra.png").stat().st_size > 0

    # Rerunning skips what finished; a stage that did not record its end runs again (resumed
    # from its checkpoint, so nothing is trained twice).
    (runs / "aff" / "ds_single" / study.STAGE_FILE).unlink()
    before = (runs / "pretrain" / "ds" / "encoder.keras").stat().st_mtime
    proc = run_cli("--config=smoke", f"--model_dir={runs}", f"--report_dir={report_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("finished earlier, skipped") == len(stages) - 1
    assert "aff/ds_single: running" in proc.stderr
    assert (runs / "pretrain" / "ds" / "encoder.keras").stat().st_mtime == before
    again = json.loads((report_dir / "study.json").read_text())["results"]
    for table in ("table3", "table4"):
        for key, row in results[table].items():  # the same figures (only the timing differs)
            assert {k: v for k, v in again[table][key].items() if k != "seconds"} == {
                k: v for k, v in row.items() if k != "seconds"}


def test_cli_names_an_unknown_config():
    proc = run_cli("--config=nope", "--model_dir=/tmp/unused_study")
    assert proc.returncode == 2 and "Unknown study config 'nope'" in proc.stderr
