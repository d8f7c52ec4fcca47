"""The reproduction study: the paper's Tables 3, 4, 5 and Fig. 3 at a chosen scale.

:func:`plan` turns a :class:`~acl_tf.configs.StudyConfig` into an ordered list of
:class:`Stage` s (pre-training, AFF fine-tuning, linear separability), each an ordinary run of
:func:`~acl_tf.tasks.pretrain.run_pretraining`, :func:`~acl_tf.tasks.finetune.run_finetuning`
or :func:`~acl_tf.tasks.linear_eval.run_linear_separability` in
``study_dir/<stage name>/``. :func:`run_study` runs them in order, skipping finished stages and
resuming interrupted ones from their last checkpoint, so rerunning the same command after a crash
continues where it stopped. After every stage :func:`write_report` collects whatever has finished
into ``report_dir/study.json`` and ``study.md`` (tables beside the paper's numbers) and draws
``ra_per_epoch.png`` (Fig. 3: validation robust accuracy after each AFF epoch) and
``ta_ra.png`` (the TA/RA trade-off of the AFF models).

The stages, and how they run, skip and resume, come from :mod:`acl_tf.studies.stages`; the
environment record and the TA/RA figure from :mod:`acl_tf.studies.report`.

Stage order puts the first variant's pre-training, the random-init baseline and that variant's
fine-tuning first (the Fig. 3 comparison), then the other variants (Table 3), the linear
protocols (Table 5) and the BN ablation (Table 4), so an interrupted study has its main
comparison first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from absl import logging

from acl_tf.configs import FinetuneConfig, PretrainConfig, StudyConfig, load_config, to_dict
from acl_tf.core import run_dir as rd
from acl_tf.core.io import write_json_atomic, write_text_atomic
from acl_tf.studies.report import draw_tradeoff, environment, savefig
from acl_tf.studies.report import pct as _pct
from acl_tf.studies.report import seeds_text as _seeds_text
from acl_tf.studies.stages import STAGE_FILE, Stage, run_stages, stage_finished
from acl_tf.studies.stages import finetune_row as _finetune_row
from acl_tf.studies.stages import stage_seconds as _stage_seconds

#: The paper's figures (CIFAR-10, ResNet-18, eps 8/255, PGD-20), in percent: (TA, RA).
PAPER = {
    "table3": {"ri": (79.90, 49.36), "s2s": (81.57, 49.97), "a2a": (78.68, 50.12),
               "a2s": (80.82, 52.11), "ds": (82.19, 52.82)},
    "table4": {("a2s", "single"): (75.15, 35.60), ("a2s", "normal"): (81.54, 51.59),
               ("a2s", "adv"): (80.82, 52.11), ("ds", "single"): (73.15, 40.10),
               ("ds", "normal"): (82.46, 52.36), ("ds", "adv"): (82.19, 52.82)},
    "table5": {("slf", "normal"): (91.02, 0.20), ("alf", "normal"): (82.63, 0.28),
               ("slf", "adv"): (79.76, 30.31), ("alf", "adv"): (74.22, 44.22)},
}
#: Fig. 3 of the paper: robust accuracy of DS after one AFF epoch; RI needs 74 epochs for it.
PAPER_FIG3 = "DS reaches 47.38% RA after 1 fine-tuning epoch; RI needs 74 epochs to match it"

NAMES = {"ri": "RI", "s2s": "SimCLR (S2S)", "a2a": "ACL (A2A)", "a2s": "ACL (A2S)",
         "ds": "ACL (DS)"}
MARKDOWN = "study.md"


def plan(config: StudyConfig) -> list[Stage]:
    """The study's stages, in the order they run (see the module docstring)."""
    pre = lambda variant, bn: load_config(  # noqa: E731
        PretrainConfig, "pretrain", config.pretrain,
        [*config.pretrain_overrides, f"variant={variant}", f"model.bn={bn}"])
    fine = lambda extra=(): load_config(  # noqa: E731
        FinetuneConfig, "finetune", config.finetune, [*config.finetune_overrides, *extra])
    aff = lambda bn: fine(["mode=aff", f"bn={bn}"])  # noqa: E731

    stages = []
    for i, variant in enumerate(config.variants):
        stages.append(Stage(f"pretrain/{variant}", "pretrain", pre(variant, "auto")))
        if i == 0 and config.random_init:
            stages.append(Stage("aff/ri", "finetune", aff("adv")))
        stages.append(Stage(f"aff/{variant}", "finetune", aff("adv"), f"pretrain/{variant}"))
    for variant in config.linear:
        stages.append(Stage(f"linear/{variant}", "linear", fine(config.linear_overrides),
                            f"pretrain/{variant}"))
    for variant in config.bn_ablation:
        stages += [Stage(f"aff/{variant}_normal", "finetune", aff("normal"),
                         f"pretrain/{variant}"),
                   Stage(f"pretrain/{variant}_single", "pretrain", pre(variant, "single")),
                   Stage(f"aff/{variant}_single", "finetune", aff("adv"),
                         f"pretrain/{variant}_single")]
    return stages


def run_study(config: StudyConfig, study_dir, report_dir=None, verbose=2,
              log: Callable[[str], None] = logging.info) -> dict:
    """Runs (or resumes) every stage of ``config`` and returns the report (see
    :func:`write_report`, written to ``report_dir``, default ``study_dir``, after each stage)."""
    report_dir = Path(report_dir) if report_dir is not None else Path(study_dir)
    return run_stages(plan(config), study_dir, config,
                      lambda: write_report(config, study_dir, report_dir), verbose, log)


# -- the report ----------------------------------------------------------------------------------
def collect(config: StudyConfig, study_dir) -> dict:
    """Every finished result of the study in ``study_dir`` (missing ones are left out)."""
    study_dir = Path(study_dir)
    table3 = {}
    for key in (["ri"] if config.random_init else []) + list(config.variants):
        row = _finetune_row(study_dir / "aff" / key)
        if row is not None:
            row["pretrain_seconds"] = _stage_seconds(study_dir / "pretrain" / key)
            table3[key] = row
    table4 = {}
    for variant in config.bn_ablation:
        for bn, name in (("single", f"{variant}_single"), ("normal", f"{variant}_normal"),
                         ("adv", variant)):
            row = _finetune_row(study_dir / "aff" / name)
            if row is not None:
                table4[f"{variant}/{bn}"] = row
    table5 = {}
    for variant in config.linear:
        path = study_dir / "linear" / variant / rd.LINEAR_SUMMARY
        if (study_dir / "linear" / variant / STAGE_FILE).exists() and path.exists():
            table5[variant] = json.loads(path.read_text())["rows"]
    return {"table3": table3, "table4": table4, "table5": table5}


def render_markdown(report: dict) -> str:
    """Tables 3, 4, 5 of the study beside the paper's (percent)."""
    results, settings = report["results"], report["settings"]
    lines = [f"Study `{settings['study_dir']}`; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
             + f"; {report['machine']}.", ""]
    t3 = results["table3"]
    keys = [k for k in ("ri", "s2s", "a2a", "a2s", "ds") if k in t3]
    lines += ["Table 3: AFF (TRADES) from each pre-training, `adv` BN; test TA / RA (PGD-20), %.",
              "", "| | " + " | ".join(NAMES[k] for k in keys) + " |",
              "|---|" + "---:|" * len(keys),
              "| TA (this study) | " + " | ".join(_pct(t3[k]["ta"]) for k in keys) + " |",
              "| RA (this study) | " + " | ".join(_pct(t3[k]["ra"]) for k in keys) + " |",
              "| TA (paper) | " + " | ".join(f"{PAPER['table3'][k][0]:.2f}" for k in keys) + " |",
              "| RA (paper) | " + " | ".join(f"{PAPER['table3'][k][1]:.2f}" for k in keys) + " |",
              "| best epoch | " + " | ".join(str(t3[k]["best_epoch"]) for k in keys) + " |",
              "| RA after epoch 1 (val) | " + " | ".join(
                  _pct(t3[k]["epochs"][0]["val_adv_acc"]) for k in keys) + " |",
              "| pre-training min | " + " | ".join(
                  "-" if t3[k]["pretrain_seconds"] is None
                  else f"{t3[k]['pretrain_seconds'] / 60:.1f}" for k in keys) + " |",
              "| fine-tuning min | " + " | ".join(
                  "-" if t3[k]["seconds"] is None else f"{t3[k]['seconds'] / 60:.1f}"
                  for k in keys) + " |", ""]
    t4 = results["table4"]
    if t4:
        lines += ["Table 4: single vs dual BN (AFF with the `normal` or `adv` branch); test "
                  "TA / RA, % (paper in brackets).", "",
                  "| variant | single BN | dual BN, `normal` | dual BN, `adv` |",
                  "|---|---|---|---|"]
        for variant in dict.fromkeys(k.split("/")[0] for k in t4):
            cells = []
            for bn in ("single", "normal", "adv"):
                row, paper = t4.get(f"{variant}/{bn}"), PAPER["table4"][(variant, bn)]
                mine = "-" if row is None else f"{_pct(row['ta'])} / {_pct(row['ra'])}"
                cells.append(f"{mine} ({paper[0]:.2f} / {paper[1]:.2f})")
            lines.append(f"| {NAMES[variant]} | " + " | ".join(cells) + " |")
        lines.append("")
    for variant, rows in results["table5"].items():
        lines += [f"Table 5: linear separability of {NAMES[variant]} (frozen encoder); test "
                  "TA / RA, % (paper in brackets).", "",
                  "| protocol | BN | TA | RA | paper TA | paper RA |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in rows:
            bn = row["bn"] if row["bn"] != "single" else "adv"
            paper = PAPER["table5"][(row["protocol"].lower(), bn)]
            lines.append(f"| {row['protocol']} | `{row['bn']}` | {_pct(row['ta'])} | "
                         f"{_pct(row['ra'])} | {paper[0]:.2f} | {paper[1]:.2f} |")
        lines.append("")
    return "\n".join(lines)


#: One colour per pre-training, the same in both figures (RI and DS, Fig. 3's pair, first).
COLORS = {"ri": "C0", "ds": "C1", "s2s": "C2", "a2s": "C3", "a2a": "C4"}
#: The marker of a fine-tuned model by the BN it was pre-trained and fine-tuned with.
BN_MARKERS = {"adv": ("o", "dual BN, adv"), "normal": ("^", "dual BN, normal"),
              "single": ("s", "single BN")}
ORDER = ("ri", "s2s", "a2a", "a2s", "ds")


def _study_seed(report: dict):
    return (report.get("settings", {}).get("finetune") or {}).get("seed")


def seed_runs(report: dict, row: dict) -> list:
    """The fine-tuning runs behind one model's row: the row itself (the study's seed) and its
    ``repeats``, the same fine-tuning with other seeds (dicts with ``seed`` and whichever of
    ``ta``, ``ra`` and ``epochs`` were recorded)."""
    return [{**row, "seed": _study_seed(report)}, *row.get("repeats", ())]


def plot_curves(report: dict, path) -> Optional[Path]:
    """Fig. 3: validation RA (and TA) after every AFF epoch of each Table-3 model.

    One line per model; where the row has ``repeats`` with per-epoch records (other fine-tuning
    seeds) the line is their mean, the band their range and every seed's value a dot. Integer
    epoch ticks; the legend sits under the panels, clear of the lines."""
    t3 = report["results"]["table3"]
    if not t3:
        return None
    import numpy as np
    from matplotlib.figure import Figure   # no pyplot: leaves the global backend alone

    fig = Figure(figsize=(10, 4.3))
    axes = fig.subplots(1, 2)
    all_epochs, seeds_drawn = set(), set()
    for key in sorted(t3, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
        runs = [r for r in seed_runs(report, t3[key]) if r.get("epochs")]
        epochs = sorted({e["epoch"] for r in runs for e in r["epochs"]})
        all_epochs.update(epochs)
        seeds_drawn.add(tuple(r.get("seed") for r in runs))
        color = COLORS.get(key)
        style = ({"linewidth": 2.5} if key in ("ri", "ds") else {"linewidth": 1.2, "alpha": 0.8})
        for ax, metric in zip(axes, ("val_adv_acc", "val_acc")):
            values = np.array([[next((100 * e[metric] for e in r["epochs"] if e["epoch"] == x),
                                     np.nan) for x in epochs] for r in runs])
            mean = np.nanmean(values, axis=0)
            line, = ax.plot(epochs, mean, marker="o" if len(runs) == 1 else None, color=color,
                            label=NAMES.get(key, key) if ax is axes[0] else None, **style)
            if len(runs) > 1:
                ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                color=line.get_color(), alpha=0.15, linewidth=0)
                for seed_values in values:
                    ax.plot(epochs, seed_values, linestyle="none", marker="o", markersize=4,
                            color=line.get_color(), alpha=0.8)
    attack = report["settings"]["eval_attack_steps"]
    seeds = max(seeds_drawn, key=len)
    how = (_seeds_text(seeds) if len(seeds) == 1
           else f"mean of {_seeds_text(seeds)} (band: their range)")
    axes[0].set(title=f"Robust accuracy (PGD-{attack}) during AFF", xlabel="fine-tuning epoch",
                ylabel="validation RA (%)")
    axes[1].set(title="Clean accuracy during AFF", xlabel="fine-tuning epoch",
                ylabel="validation TA (%)")
    for ax in axes:
        ax.set_xticks(sorted(all_epochs))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"Validation accuracy after each AFF epoch; {how}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return savefig(fig, path)


def _tradeoff_points(report: dict) -> list:
    """[(variant, bn, this study's runs, paper (TA, RA))] of Tables 3 and 4."""
    results = report["results"]
    points = [(k, "adv", seed_runs(report, r), PAPER["table3"].get(k))
              for k, r in results["table3"].items()]
    for key, row in results["table4"].items():
        variant, bn = key.split("/")
        if bn != "adv":   # the adv rows are Table 3's models
            points.append((variant, bn, seed_runs(report, row), PAPER["table4"].get((variant, bn))))
    return sorted(points, key=lambda p: (ORDER.index(p[0]) if p[0] in ORDER else len(ORDER),
                                         list(BN_MARKERS).index(p[1])))


def plot_tradeoff(report: dict, path) -> Optional[Path]:
    """Test TA against RA of every AFF model of Tables 3 and 4, beside the paper's points.

    Colour: the pre-training; marker: the BN (Table 3 = dual BN, ``adv`` branch). A model
    fine-tuned with several seeds (``repeats``) is drawn as a filled mean with a hollow marker
    per seed, joined by a thin line (their spread). A legend instead of labels on the points
    (:func:`acl_tf.studies.report.draw_tradeoff`)."""
    return draw_tradeoff(_tradeoff_points(report), path, colors=COLORS, names=NAMES,
                         markers=BN_MARKERS, reference_title="Paper (Tables 3, 4)",
                         caption="AFF models")


def write_report(config: StudyConfig, study_dir, report_dir) -> dict:
    """Collects the finished results and writes ``study.json``, ``study.md``, the plots."""
    study_dir, report_dir = Path(study_dir), Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stages = plan(config)
    fine = next(s.config for s in stages if s.kind == "finetune")
    pre = next(s.config for s in stages if s.kind == "pretrain")
    report = {
        "settings": {"study": to_dict(config), "study_dir": str(study_dir),
                     "pretrain": to_dict(pre), "finetune": to_dict(fine),
                     "eval_attack_steps": fine.eval_attack.steps},
        **environment(),
        "stages": {s.name: stage_finished(study_dir, s) for s in stages},
        "results": collect(config, study_dir),
    }
    write_json_atomic(report_dir / "study.json", report)
    text = render_markdown(report)
    for name, draw in (("ra_per_epoch.png", plot_curves), ("ta_ra.png", plot_tradeoff)):
        if draw(report, report_dir / name):
            text += f"\n![{name}]({name})\n"
    write_text_atomic(report_dir / MARKDOWN, text)
    return report
