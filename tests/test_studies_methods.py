"""acl_tf.studies.methods: the comparison of ACL's successors. Its plan (one budget for every
method, shared pre-trainings, the scaled schedules), its report from finished runs beside the
published figures, and an end-to-end run of the command line on the shipped sample."""

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

from acl_tf.configs import load_study_config
from acl_tf.studies import methods as study
from acl_tf.studies.stages import STAGE_FILE


def test_plan_gives_every_method_the_same_budget():
    config = load_study_config("methods_cpu")
    stages = study.plan(config)
    names = [s.name for s in stages]
    # The AFF comparison first, each encoder made just before its first fine-tuning; DynACL++
    # and DynACL-AIR++ post-process the pre-training of DynACL and DynACL-AIR.
    assert names == [
        "pretrain/acl", "aff/acl_seed0", "pretrain/dynacl", "aff/dynacl_seed0",
        "postprocess/dynacl_pp", "aff/dynacl_pp_seed0", "pretrain/dynacl_air",
        "aff/dynacl_air_seed0", "postprocess/dynacl_air_pp", "aff/dynacl_air_pp_seed0",
        "pretrain/dynacl_mom", "aff/dynacl_mom_seed0",
        "slf/acl_seed0", "slf/dynacl_seed0", "slf/dynacl_pp_seed0", "slf/dynacl_air_seed0",
        "slf/dynacl_air_pp_seed0", "slf/dynacl_mom_seed0"]
    assert study.finetune_stage("aff", "acl", 0) == "aff/acl_seed0"
    by_name = {s.name: s for s in stages}
    pretrain = {n: s.config for n, s in by_name.items() if s.kind == "pretrain"}
    assert {n: c.method for n, c in pretrain.items()} == {
        "pretrain/acl": "acl", "pretrain/dynacl": "dynacl", "pretrain/dynacl_air": "dynacl_air",
        "pretrain/dynacl_mom": "dynacl"}
    assert [n for n, c in pretrain.items() if c.dynamic.momentum_encoder] == ["pretrain/dynacl_mom"]
    assert dataclasses.replace(pretrain["pretrain/dynacl_mom"], dynamic=dataclasses.replace(
        pretrain["pretrain/dynacl_mom"].dynamic, momentum_encoder=False)) == pretrain[
        "pretrain/dynacl"]
    budgets = {(c.epochs, c.batch_size, c.data.limit, c.model.width, c.model.head_dim,
                c.attack.steps, c.optimizer.peak_learning_rate(c.batch_size),
                c.optimizer.warmup_epochs, c.optimizer.schedule_per_epoch)
               for c in pretrain.values()}
    assert budgets == {(5, 256, 5000, 16, 128, 5, 2.0, 1, False)}
    # DynACL's schedules, scaled: the strength anneals every epoch over the 5 epochs, the weights
    # follow it in the same epoch (halved by the DynACL code's ds_average, not by AIR's).
    dynacl, air = pretrain["pretrain/dynacl"], pretrain["pretrain/dynacl_air"]
    for c in (dynacl, air):
        assert [round(c.dynamic.strength(e, c.epochs), 6) for e in range(1, 6)] == [
            1.0, 0.8, 0.6, 0.4, 0.2]
        assert c.stream_weights(1) == (1.0, 1.0)
        assert c.stream_weights(5) == pytest.approx((1 - 0.8 * 2 / 3, 1 + 0.8 * 2 / 3))
    assert dynacl.ds_average and not air.ds_average and air.uses_air
    assert pretrain["pretrain/acl"].ds_average and not pretrain["pretrain/acl"].dynamic_schedules

    post = {n: s for n, s in by_name.items() if s.kind == "postprocess"}
    assert {n: s.encoder for n, s in post.items()} == {
        "postprocess/dynacl_pp": "pretrain/dynacl",
        "postprocess/dynacl_air_pp": "pretrain/dynacl_air"}
    assert {(s.config.data.limit, s.config.batch_size, s.config.linear_probe.epochs,
             s.config.aft.epochs, s.config.aft.optimizer.decay_epochs) for s in post.values()} == {
        (5000, 256, 5, 2, (1,))}
    assert post["postprocess/dynacl_air_pp"].config.clusters.tolerance == 1e-5

    fine = [s for s in stages if s.kind == "finetune"]
    assert {s.name: s.encoder for s in fine if s.name.startswith("aff/")} == {
        "aff/acl_seed0": "pretrain/acl", "aff/dynacl_seed0": "pretrain/dynacl",
        "aff/dynacl_pp_seed0": "postprocess/dynacl_pp",
        "aff/dynacl_air_seed0": "pretrain/dynacl_air",
        "aff/dynacl_air_pp_seed0": "postprocess/dynacl_air_pp",
        "aff/dynacl_mom_seed0": "pretrain/dynacl_mom"}
    for mode in ("aff", "slf"):   # one fine-tuning config per protocol, for every method
        configs = [s.config for s in fine if s.name.startswith(f"{mode}/")]
        assert len(configs) == 6 and all(c == configs[0] for c in configs)
        assert (configs[0].mode, configs[0].bn, configs[0].seed, configs[0].epochs,
                configs[0].data.limit, configs[0].val_size, configs[0].test_limit) == (
            mode, "adv", 0, 3, 3500, 500, 2000)

    # More seeds repeat the fine-tunings, not the pre-trainings.
    two = study.plan(load_study_config("methods_cpu", ["seeds=[0,7]"]))
    assert len(two) == len(stages) + 12 and [s.name for s in two][:len(stages)] == names
    assert two[-1].name == "slf/dynacl_mom_seed7" and two[-1].config.seed == 7


def _finish(study_dir, stage, seconds, metrics=None):
    run_dir = study_dir / stage
    run_dir.mkdir(parents=True)
    (run_dir / STAGE_FILE).write_text(json.dumps({"seconds": seconds}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


def _fine(ta, ra):
    return {"test": {"acc": ta, "adv_acc": ra, "count": 40}, "best_epoch": 1,
            "epochs": [{"epoch": 1, "val_acc": ta, "val_adv_acc": ra}]}


def test_report_sets_finished_runs_beside_the_published_figures(tmp_path):
    config = load_study_config("methods_smoke", ["seeds=[0,1]"])
    runs = tmp_path / "runs"
    for stage in ("pretrain/acl", "pretrain/dynacl_air"):
        _finish(runs, stage, 120.0)
    _finish(runs, "postprocess/dynacl_air_pp", 60.0, {"cluster_purity": 0.3125})
    _finish(runs, "aff/acl_seed0", 30.0, _fine(0.25, 0.125))
    _finish(runs, "aff/acl_seed1", 30.0, _fine(0.35, 0.175))
    _finish(runs, "aff/dynacl_air_pp_seed0", 36.0, _fine(0.5, 0.25))
    _finish(runs, "slf/acl_seed0", 12.0, _fine(0.2, 0.1))
    (runs / "aff" / "dynacl_seed0").mkdir(parents=True)     # started, not finished

    report = study.write_report(config, runs, tmp_path / "report")
    results = report["results"]
    assert list(results) == ["acl", "dynacl", "dynacl_pp", "dynacl_air", "dynacl_air_pp",
                             "dynacl_mom"]
    assert [r["seed"] for r in results["acl"]["runs"]["aff"]] == [0, 1]
    assert results["dynacl"]["runs"] == {"aff": [], "slf": []}
    assert results["dynacl_pp"]["pretrain"] == "pretrain/dynacl"
    assert results["dynacl_air_pp"]["pretrain"] == "pretrain/dynacl_air"
    assert results["dynacl_air_pp"]["cluster_purity"] == 0.3125
    assert report["stages"]["aff/acl_seed1"] and not report["stages"]["aff/dynacl_seed0"]
    assert report["settings"]["published"]["figures"]["aff"]["dynacl-air++"] == [82.36, 50.79]
    assert set(report["settings"]["pretrain"]) == {
        "pretrain/acl", "pretrain/dynacl", "pretrain/dynacl_air", "pretrain/dynacl_mom"}

    text = (tmp_path / "report" / "methods.md").read_text()
    assert json.loads((tmp_path / "report" / "study.json").read_text()) == json.loads(
        json.dumps(report))
    assert "AFF: test TA / RA (PGD-2) on 40 test images, mean of fine-tuning seeds 0, 1" in text
    # Means over the seeds (each seed in brackets), differences to the first method, theirs.
    assert ("| ACL (DS) | 30.00 (25.00 / 35.00) | 15.00 (12.50 / 17.50) | +0.00 | +0.00 | "
            "81.25 | 49.60 | +0.00 | +0.00 |") in text
    assert "| DynACL | - | - | - | - | 81.86 | 50.52 | +0.61 | +0.92 |" in text
    assert ("| DynACL-AIR++ | 50.00 (50.00 / -) | 25.00 (25.00 / -) | +20.00 | +10.00 | "
            "82.36 | 50.79 | +1.11 | +1.19 |") in text                # seed 1 not finished
    assert "| DynACL | - | - | - | - | - | - | - | - |" in text      # SLF: none published
    assert "| DynACL-AIR++ | - | - | - | - | 81.80 | 46.99 | +3.58 | +7.82 |" in text
    # Times: a shared pre-training counts once; post-processing with its cluster purity.
    assert "| ACL (DS) | `pretrain/acl` | 2.0 | - | - | 1.0 | 0.2 |" in text
    assert "| DynACL-AIR++ | `pretrain/dynacl_air` | shared | 1.0 | 0.312 | 0.6 | - |" in text
    assert "AutoAttack is stronger than PGD-2" in text
    assert "![methods_ta_ra.png](methods_ta_ra.png)" in text
    figure = tmp_path / "report" / study.FIGURE
    assert 0 < figure.stat().st_size < 150_000

    nothing = study.write_report(config, tmp_path / "none", tmp_path / "empty")
    assert not any(nothing["stages"].values())
    assert not (tmp_path / "empty" / study.FIGURE).exists()
    assert "| DynACL-AIR | `pretrain/dynacl_air` | - | - | - | - | - |" in (
        tmp_path / "empty" / "methods.md").read_text()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "acl_tf.study", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=1200)


# Two methods that share a pre-training: DynACL-AIR (the dynamic schedules and AIR's
# regularisers) and DynACL-AIR++ (its post-processing), each fine-tuned with AFF (SLF stages are
# the same fine-tuning runs in another mode: test_plan_gives_every_method_the_same_budget checks
# their configs, and the reproduction study's smoke test runs SLF end to end).
SMOKE = ["--config=methods_smoke", "--set=modes=[aff]",
         "--set=methods=[{key: air, pretrain: cifar10_dynacl_air, published: dynacl-air}, "
         "{key: air_pp, name: AIR++, pretrain: cifar10_dynacl_air, "
         "postprocess: cifar10_dynacl_air, published: dynacl-air++}]"]


@pytest.mark.slow
@pytest.mark.e2e
def test_smoke_comparison_runs_reports_and_skips_what_finished(tmp_path):
    runs, report_dir = tmp_path / "runs", tmp_path / "report"
    proc = run_cli(*SMOKE, f"--model_dir={runs}", f"--report_dir={report_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["pretrain/air", "aff/air_seed0", "postprocess/air_pp", "aff/air_pp_seed0"]
    for name in names:
        assert (runs / name / STAGE_FILE).exists(), name
    assert (runs / "postprocess" / "air_pp" / "encoder.keras").exists()
    history = json.loads((runs / "pretrain" / "air" / "history.json").read_text())
    assert [e["aug_strength"] for e in history] == [1.0, 0.5]     # annealed every epoch
    report = json.loads((report_dir / "study.json").read_text())
    assert all(report["stages"].values()) and list(report["stages"]) == names
    for key in ("air", "air_pp"):
        (row,) = report["results"][key]["runs"]["aff"]
        assert row["test_images"] == 40 and 0 <= row["ra"] <= row["ta"] <= 1
    assert 0 < report["results"]["air_pp"]["cluster_purity"] <= 1
    text = (report_dir / "methods.md").read_text()
    assert text in proc.stdout and "| AIR++ |" in text and "AFF: test TA / RA" in text
    assert (report_dir / "methods_ta_ra.png").stat().st_size > 0

    # Rerunning skips every finished stage and rewrites the same report.
    proc = run_cli(*SMOKE, f"--model_dir={runs}", f"--report_dir={report_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("finished earlier, skipped") == len(names)
    assert json.loads((report_dir / "study.json").read_text())["results"] == report["results"]
