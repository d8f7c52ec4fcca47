"""The reproduction study: its plan, its tables, and an end-to-end run of the smoke study."""

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from acl_tf.configs import ConfigError, StudyConfig, load_config
from acl_tf.studies import reproduction as study


def test_study_config_rejects_what_cannot_be_studied():
    with pytest.raises(ConfigError, match="variants"):
        StudyConfig(variants=("ds", "simclr"))
    with pytest.raises(ConfigError, match="bn_ablation .*dual-BN"):
        StudyConfig(bn_ablation=("s2s",))
    with pytest.raises(ConfigError, match="linear names \\['a2a'\\]"):
        StudyConfig(variants=("ds",), linear=("a2a",), bn_ablation=())


def test_plan_gives_every_variant_the_same_budget():
    config = load_config(StudyConfig, "study", "cifar10_cpu")
    stages = study.plan(config)
    names = [s.name for s in stages]
    # Fig. 3's pair first, then Table 3, Table 5, Table 4.
    assert names[:3] == ["pretrain/ds", "aff/ri", "aff/ds"]
    assert names.index("aff/a2a") < names.index("linear/ds") < names.index("pretrain/ds_single")
    assert len(names) == len(set(names)) == 4 + 5 + 1 + 3 * 2
    pretrain = {s.name: s.config for s in stages if s.kind == "pretrain"}
    budgets = {(c.epochs, c.batch_size, c.data.limit, c.model.width, c.attack.steps)
               for c in pretrain.values()}
    assert budgets == {(5, 256, 5000, 16, 5)}
    assert {n: c.variant for n, c in pretrain.items()}["pretrain/a2s_single"] == "a2s"
    assert pretrain["pretrain/ds_single"].dual_bn is False
    assert pretrain["pretrain/ds"].dual_bn and not pretrain["pretrain/s2s"].dual_bn
    fine = {s.name: s for s in stages if s.kind == "finetune"}
    assert {(s.config.epochs, s.config.data.limit, s.config.mode) for s in fine.values()} == {
        (3, 3500, "aff")}
    assert fine["aff/ri"].encoder is None and fine["aff/a2a"].encoder == "pretrain/a2a"
    assert fine["aff/ds_normal"].config.bn == "normal" and fine["aff/ds"].config.bn == "adv"
    assert fine["aff/ds_single"].encoder == "pretrain/ds_single"


def _row(ta, ra, epochs=((1, 0.3, 0.1), (2, 0.4, 0.2))):
    return {"ta": ta, "ra": ra, "test_images": 100, "best_epoch": len(epochs), "seconds": 60.0,
            "pretrain_seconds": 120.0,
            "epochs": [{"epoch": e, "val_acc": a, "val_adv_acc": r} for e, a, r in epochs]}


def test_markdown_puts_each_figure_beside_the_papers(tmp_path):
    report = {
        "settings": {"study_dir": "runs/x", "eval_attack_steps": 20},
        "versions": {"tensorflow": "2.16.2"}, "machine": "x86_64, 2 CPU cores, 0 GPU",
        "results": {
            "table3": {"ri": _row(0.25, 0.125), "ds": _row(0.5, 0.375)},
            "table4": {"ds/single": _row(0.1, 0.05), "ds/adv": _row(0.5, 0.375)},
            "table5": {"ds": [{"protocol": "SLF", "bn": "normal", "ta": 0.6, "ra": 0.0}]},
        },
    }
    text = study.render_markdown(report)
    assert "| | RI | ACL (DS) |" in text
    assert "| TA (this study) | 25.00 | 50.00 |" in text
    assert "| RA (this study) | 12.50 | 37.50 |" in text
    assert "| TA (paper) | 79.90 | 82.19 |" in text and "| RA (paper) | 49.36 | 52.82 |" in text
    assert "| RA after epoch 1 (val) | 10.00 | 10.00 |" in text
    assert ("| ACL (DS) | 10.00 / 5.00 (73.15 / 40.10) | - (82.46 / 52.36) | "
            "50.00 / 37.50 (82.19 / 52.82) |") in text
    assert "| SLF | `normal` | 60.00 | 0.00 | 91.02 | 0.20 |" in text
    assert study.plot_curves(report, tmp_path / "c.png").stat().st_size > 0
    assert study.plot_tradeoff(report, tmp_path / "t.png").stat().st_size > 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "acl_tf.study", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_study_runs_reports_and_resumes(tmp_path):
    runs, report_dir = tmp_path / "runs", tmp_path / "report"
    proc = run_cli("--config=smoke", f"--study_dir={runs}", f"--report_dir={report_dir}")
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
    proc = run_cli("--config=smoke", f"--study_dir={runs}", f"--report_dir={report_dir}")
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
    proc = run_cli("--config=nope", "--study_dir=/tmp/unused_study")
    assert proc.returncode == 2 and "Unknown study config 'nope'" in proc.stderr
