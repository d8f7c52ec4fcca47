"""acl_tf.studies.reproduction: the study's plan (the same budget for every variant) and its tables
and figures beside the paper's."""

import pytest

from acl_tf.configs import StudyConfig, load_config
from acl_tf.studies import reproduction as study


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


def _seeded_report():
    """Two Table-3 models, each with a repetition by another fine-tuning seed."""
    ri, ds = _row(0.25, 0.125), _row(0.5, 0.375, ((1, 0.3, 0.2), (2, 0.45, 0.3), (3, 0.5, 0.35)))
    ri["repeats"] = [{"seed": 1, "ta": 0.27, "ra": 0.1,
                      "epochs": [{"epoch": 1, "val_acc": 0.2, "val_adv_acc": 0.12},
                                 {"epoch": 2, "val_acc": 0.35, "val_adv_acc": 0.18}]}]
    ds["repeats"] = [{"seed": 1, "ta": 0.52, "ra": 0.36}]   # test figures only, as recorded
    return {"settings": {"study_dir": "runs/x", "eval_attack_steps": 20,
                         "finetune": {"seed": 0}},
            "results": {"table3": {"ri": ri, "ds": ds},
                        "table4": {"ds/single": _row(0.1, 0.05), "ds/adv": ds},
                        "table5": {}}}


def test_figures_draw_every_fine_tuning_seed(tmp_path):
    report = _seeded_report()
    runs = study.seed_runs(report, report["results"]["table3"]["ri"])
    assert [r["seed"] for r in runs] == [0, 1] and runs[0]["ta"] == 0.25
    points = study._tradeoff_points(report)
    assert [(p[0], p[1], len(p[2])) for p in points] == [
        ("ri", "adv", 2), ("ds", "adv", 2), ("ds", "single", 1)]
    for draw, name in ((study.plot_curves, "ra_per_epoch.png"),
                       (study.plot_tradeoff, "ta_ra.png")):
        path = draw(report, tmp_path / name)
        assert path == tmp_path / name and 0 < path.stat().st_size < 150_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ra_per_epoch.png", "ta_ra.png"]
    empty = {"settings": {}, "results": {"table3": {}, "table4": {}, "table5": {}}}
    assert study.plot_curves(empty, tmp_path / "x.png") is None
    assert study.plot_tradeoff(empty, tmp_path / "y.png") is None


def _make_figures():
    import importlib.util

    from conftest import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location(
        "make_figures", PROJECT_ROOT / "scripts" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recorded_study_figures_redraw_without_running_it(tmp_path):
    """scripts/make_figures.py study: from docs/study/study.json plus the seed-1 row of Table 3
    in docs/results.md (its seed-0 row must be study.json's)."""
    import json

    figures = _make_figures()
    seeds = figures.read_seed_table()
    assert sorted(seeds) == [0, 1]
    assert sorted(seeds[1]) == ["a2a", "a2s", "ds", "ri", "s2s"]
    assert seeds[1]["ri"] == {"ta": 0.2925, "ra": 0.159}
    recorded = json.loads((figures.STUDY_DIR / "study.json").read_text())
    report = figures.add_seed_repeats(recorded, seeds)
    assert report["results"]["table3"]["ds"]["repeats"] == [
        {"seed": 1, "test_images": 2000, "ta": 0.34, "ra": 0.2165}]
    assert "repeats" not in recorded["results"]["table3"]["ds"]   # the input is left alone
    wrong = json.loads(json.dumps(recorded))
    wrong["results"]["table3"]["ds"]["ra"] = 0.3
    with pytest.raises(ValueError, match="seed 0 RA of ds is 21.60%, study.json has 30.00%"):
        figures.add_seed_repeats(wrong, seeds)

    records = figures.make_study_figures(out_dir=tmp_path)
    assert sorted(records) == ["study/ra_per_epoch.png", "study/ta_ra.png"]
    for name in ("ra_per_epoch.png", "ta_ra.png"):
        assert 0 < (tmp_path / name).stat().st_size < 150_000
    for record in records.values():
        record["machine"] = {"cpu": "a CPU", "cpu_cores": 2, "gpus": 0, "python": "3.10",
                             "tensorflow": "2.16", "keras": "3"}
    captions = figures.write_captions(records, tmp_path / "images").read_text()
    assert "## `study/ta_ra.png`" in captions and "a CPU, 2 CPU cores, 0 GPU" in captions
    assert "`python scripts/make_figures.py study`" in captions
