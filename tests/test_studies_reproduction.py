"""acl_tf.studies.reproduction: the study's plan (the same budget for every variant) and its tables
and figures beside the paper's."""

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
