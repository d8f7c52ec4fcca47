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

Stage order puts the first variant's pre-training, the random-init baseline and that variant's
fine-tuning first (the Fig. 3 comparison), then the other variants (Table 3), the linear
protocols (Table 5) and the BN ablation (Table 4), so an interrupted study has its main
comparison first.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional, Union

import keras
import tensorflow as tf
from absl import logging

from acl_tf.configs import FinetuneConfig, PretrainConfig, StudyConfig, load_config, to_dict
from acl_tf.core import run_dir as rd
from acl_tf.core.io import write_json_atomic, write_text_atomic
from acl_tf.tasks.finetune import run_finetuning
from acl_tf.tasks.linear_eval import run_linear_separability
from acl_tf.tasks.pretrain import run_pretraining
from acl_tf.tasks.selection import read_metrics

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
STAGE_FILE = "study_stage.json"


@dataclasses.dataclass
class Stage:
    """One run of the study: ``kind`` is ``pretrain``, ``finetune`` or ``linear``; ``encoder``
    names the pre-training stage whose encoder a fine-tuning starts from (None: random init)."""

    name: str
    kind: str
    config: Union[PretrainConfig, FinetuneConfig]
    encoder: Optional[str] = None


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


def stage_finished(study_dir: Path, stage: Stage) -> bool:
    return (study_dir / stage.name / STAGE_FILE).exists()


def _run_stage(stage: Stage, study_dir: Path, verbose) -> None:
    run_dir = study_dir / stage.name
    encoder = str(study_dir / stage.encoder) if stage.encoder else None
    if stage.kind == "pretrain":
        run_pretraining(stage.config, run_dir, resume=True, verbose=verbose)
    elif stage.kind == "finetune":  # encoder None: random init (the config has no encoder)
        run_finetuning(stage.config, run_dir, pretrained=encoder, resume=True, verbose=verbose)
    elif stage.kind == "linear":
        run_linear_separability(stage.config, run_dir, pretrained=encoder, resume=True)
    else:
        raise ValueError(f"Unknown stage kind {stage.kind!r}.")


def run_study(config: StudyConfig, study_dir, report_dir=None, verbose=2,
              log: Callable[[str], None] = logging.info) -> dict:
    """Runs (or resumes) every stage of ``config`` and returns the report (see
    :func:`write_report`, written to ``report_dir``, default ``study_dir``, after each stage)."""
    study_dir = Path(study_dir)
    report_dir = Path(report_dir) if report_dir is not None else study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(study_dir / "study_config.json", to_dict(config))
    stages = plan(config)
    report = write_report(config, study_dir, report_dir)
    for i, stage in enumerate(stages, 1):
        if stage_finished(study_dir, stage):
            log(f"[{i}/{len(stages)}] {stage.name}: finished earlier, skipped")
            continue
        log(f"[{i}/{len(stages)}] {stage.name}: running in {study_dir / stage.name}")
        start = time.time()
        resumed = (study_dir / stage.name).exists()
        _run_stage(stage, study_dir, verbose)
        seconds = time.time() - start
        write_json_atomic(study_dir / stage.name / STAGE_FILE,
                    {"seconds": round(seconds, 1), "resumed": resumed,
                     "finished": time.strftime("%Y-%m-%d %H:%M:%S %z")})
        log(f"[{i}/{len(stages)}] {stage.name}: done in {seconds / 60:.1f} min")
        report = write_report(config, study_dir, report_dir)
        keras.backend.clear_session()
        gc.collect()
    return report


# -- the report ----------------------------------------------------------------------------------
def _stage_seconds(run_dir: Path) -> Optional[float]:
    """Wall seconds of a finished stage (with those of earlier records of it kept beside
    ``STAGE_FILE`` as ``study_stage.*.json``, e.g. a first pass that was re-tested)."""
    if not (run_dir / STAGE_FILE).exists():
        return None
    return sum(json.loads(p.read_text())["seconds"] for p in run_dir.glob("study_stage*.json"))


def _finetune_row(run_dir: Path) -> Optional[dict]:
    """TA/RA on the test images and the per-epoch validation record of a finished AFF run."""
    if not (run_dir / STAGE_FILE).exists():
        return None
    metrics = read_metrics(run_dir)
    return {"ta": metrics["test"]["acc"], "ra": metrics["test"]["adv_acc"],
            "test_images": metrics["test"]["count"], "best_epoch": metrics["best_epoch"],
            "epochs": metrics["epochs"], "seconds": _stage_seconds(run_dir)}


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


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


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
                  "| variant | single BN | dual BN, `normal` | dual BN, `adv` |", "|---|---|---|---|"]
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
                  "| protocol | BN | TA | RA | paper TA | paper RA |", "|---|---|---:|---:|---:|---:|"]
        for row in rows:
            bn = row["bn"] if row["bn"] != "single" else "adv"
            paper = PAPER["table5"][(row["protocol"].lower(), bn)]
            lines.append(f"| {row['protocol']} | `{row['bn']}` | {_pct(row['ta'])} | "
                         f"{_pct(row['ra'])} | {paper[0]:.2f} | {paper[1]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(report: dict, path) -> Optional[Path]:
    """Fig. 3: validation RA (and TA) after every AFF epoch of each Table-3 model."""
    t3 = report["results"]["table3"]
    if not t3:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, row in t3.items():
        epochs = [e["epoch"] for e in row["epochs"]]
        style = {"linewidth": 2.5} if key in ("ri", "ds") else {"linewidth": 1, "alpha": 0.7}
        axes[0].plot(epochs, [100 * e["val_adv_acc"] for e in row["epochs"]], marker="o",
                     label=NAMES[key], **style)
        axes[1].plot(epochs, [100 * e["val_acc"] for e in row["epochs"]], marker="o",
                     label=NAMES[key], **style)
    attack = report["settings"]["eval_attack_steps"]
    axes[0].set(title=f"Robust accuracy (PGD-{attack}) during AFF", xlabel="fine-tuning epoch",
                ylabel="validation RA (%)")
    axes[1].set(title="Clean accuracy during AFF", xlabel="fine-tuning epoch",
                ylabel="validation TA (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_tradeoff(report: dict, path) -> Optional[Path]:
    """Test TA against RA of every AFF model of Tables 3 and 4, beside the paper's points."""
    results = report["results"]
    points = {NAMES[k]: (r, PAPER["table3"][k]) for k, r in results["table3"].items()}
    for key, row in results["table4"].items():
        variant, bn = key.split("/")
        if bn != "adv":
            points[f"{NAMES[variant]}, {bn} BN"] = (row, PAPER["table4"][(variant, bn)])
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, (row, paper) in points.items():
        axes[0].scatter(100 * row["ra"], 100 * row["ta"])
        axes[0].annotate(name, (100 * row["ra"], 100 * row["ta"]), fontsize=8)
        axes[1].scatter(paper[1], paper[0])
        axes[1].annotate(name, (paper[1], paper[0]), fontsize=8)
    axes[0].set(title="This study (test)", xlabel="RA (%)", ylabel="TA (%)")
    axes[1].set(title="Paper (Tables 3, 4)", xlabel="RA (%)", ylabel="TA (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{len(tf.config.list_physical_devices('GPU'))} GPU",
        "stages": {s.name: stage_finished(study_dir, s) for s in stages},
        "results": collect(config, study_dir),
    }
    write_json_atomic(report_dir / "study.json", report)
    text = render_markdown(report)
    for name, draw in (("ra_per_epoch.png", plot_curves), ("ta_ra.png", plot_tradeoff)):
        if draw(report, report_dir / name):
            text += f"\n![{name}]({name})\n"
    write_text_atomic(report_dir / "study.md", text)
    return report
