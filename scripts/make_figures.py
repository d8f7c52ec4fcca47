#!/usr/bin/env python
"""Draws the pictures of the docs.

Usage (from anywhere; paths default to this checkout)::

    .venv/bin/python scripts/make_figures.py study   # seconds: docs/study/ra_per_epoch.png,
                                                     #          docs/study/ta_ra.png
    .venv/bin/python scripts/make_figures.py smoke   # minutes: docs/images/training_curves.png,
                                                     #          docs/images/accuracy_vs_epsilon.png
    .venv/bin/python scripts/make_figures.py all

``study`` redraws the reproduction study's Fig. 3 and TA/RA figures from the recorded
``docs/study/study.json`` without running anything. The study itself fine-tuned with seed 0; of
the repetition with seed 1 the docs keep the test TA/RA of Table 3 in ``docs/results.md``, so
those are read from that table and added as ``repeats`` of the Table-3 rows (the table's seed-0
row is checked against ``study.json`` first). Fig. 3 has per-epoch records of seed 0 only.

``smoke`` runs, in a temporary directory (``--work_dir`` to keep it), a smoke DS pre-training
(preset ``smoke``), an AFF fine-tuning of it (preset ``smoke``, more epochs) and a smoke
evaluation of the fine-tuned model (preset ``smoke`` on all 200 test images, a wider epsilon
sweep), all on the shipped ``sample:cifar10``, and draws the fine-tuning's curves and the
accuracy-vs-epsilon plot.

Every run records what produced each picture (command, settings, machine, versions, time) in
``docs/images/figures.json`` and rewrites the captions in ``docs/images/README.md`` from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOCS = ROOT / "docs"
STUDY_DIR = DOCS / "study"
IMAGES_DIR = DOCS / "images"
RESULTS_MD = DOCS / "results.md"
PROVENANCE = "figures.json"

# The smoke runs behind docs/images: presets and overrides.
SMOKE_PRETRAIN = ("smoke", ["variant=ds"])
SMOKE_FINETUNE = ("smoke", ["epochs=6", "optimizer.decay_epochs=[4]", "val_size=100",
                            "evaluate_test=false", "export=false"])
SMOKE_EVALUATE = ("smoke", ["data.limit=200", "eps_sweep=[0,1/255,2/255,4/255,8/255,16/255]"])


# -- the study figures ---------------------------------------------------------------------------
def read_seed_table(path=RESULTS_MD) -> dict:
    """``{seed: {model key: {"ta": fraction, "ra": fraction}}}`` from the rows
    ``| TA, fine-tuning seed N | ... |`` and ``| RA, fine-tuning seed N | ... |`` of Table 3 in
    ``docs/results.md`` (columns named as in the study's tables)."""
    from acl_tf.studies.reproduction import NAMES

    keys = {name: key for key, name in NAMES.items()}
    columns, seeds = None, {}
    for line in Path(path).read_text().splitlines():
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| |") and all(c in keys for c in cells[1:]):
            columns = [keys[c] for c in cells[1:]]
            continue
        match = re.fullmatch(r"(TA|RA), fine-tuning seed (\d+)", cells[0])
        if match and columns:
            values = [round(float(c) / 100, 6) for c in cells[1:]]
            if len(values) != len(columns):
                raise ValueError(f"{path}: row {cells[0]!r} has {len(values)} values for "
                                 f"{len(columns)} columns")
            row = seeds.setdefault(int(match.group(2)), {})
            for key, value in zip(columns, values):
                row.setdefault(key, {})[match.group(1).lower()] = value
    if not seeds:
        raise ValueError(f"{path} has no 'TA, fine-tuning seed N' rows under a Table-3 header")
    return seeds


def add_seed_repeats(report: dict, seed_table: dict) -> dict:
    """A copy of ``report`` whose Table-3 rows carry the other seeds of ``seed_table`` as
    ``repeats``; the study's own seed in the table must agree with the report."""
    report = json.loads(json.dumps(report))
    own = report["settings"]["finetune"]["seed"]
    table3 = report["results"]["table3"]
    for key, values in seed_table.get(own, {}).items():
        row = table3.get(key)
        for metric in ("ta", "ra"):
            if row is None or abs(row[metric] - values[metric]) > 5e-5:
                raise ValueError(f"docs/results.md: seed {own} {metric.upper()} of {key} is "
                                 f"{100 * values[metric]:.2f}%, study.json has "
                                 f"{'nothing' if row is None else f'{100 * row[metric]:.2f}%'}")
    for seed, rows in sorted(seed_table.items()):
        if seed == own:
            continue
        for key, values in rows.items():
            if key in table3:
                table3[key].setdefault("repeats", []).append(
                    {"seed": seed, "test_images": table3[key].get("test_images"), **values})
    return report


def make_study_figures(study_dir=STUDY_DIR, out_dir=None, results_md=RESULTS_MD) -> dict:
    """Redraws ``ra_per_epoch.png`` and ``ta_ra.png`` from ``study_dir/study.json`` into
    ``out_dir`` (default: ``study_dir``); returns the provenance records."""
    from acl_tf.studies.reproduction import plot_curves, plot_tradeoff

    study_dir = Path(study_dir)
    out_dir = Path(out_dir) if out_dir is not None else study_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    report = json.loads((study_dir / "study.json").read_text())
    report = add_seed_repeats(report, read_seed_table(results_md))
    seeds = sorted({r["seed"] for row in report["results"]["table3"].values()
                    for r in row.get("repeats", [])} | {report["settings"]["finetune"]["seed"]})
    command = "python scripts/make_figures.py study"
    data = (f"recorded results in docs/study/study.json (the study run of "
            f"`python -m acl_tf.study --config=cifar10_cpu`, {report['machine']}) and the "
            f"fine-tuning seeds {', '.join(map(str, seeds))} of Table 3 in docs/results.md")
    records = {}
    for name, draw, what in (
            ("ra_per_epoch.png", plot_curves,
             "Fig. 3 of the study: validation RA and TA after each AFF epoch (seed 0: "
             "study.json holds no per-epoch values of the seed-1 repetition)"),
            ("ta_ra.png", plot_tradeoff,
             "test TA against RA of every AFF model (Tables 3 and 4; Table-3 models with each "
             "fine-tuning seed and their mean), beside the paper's")):
        path = draw(report, out_dir / name)
        records[f"study/{name}"] = {"what": what, "command": command, "data": data,
                                    **_file_info(path)}
    return records


# -- the smoke figures ---------------------------------------------------------------------------
def make_smoke_figures(out_dir=IMAGES_DIR, work_dir=None) -> dict:
    """Smoke pre-training -> fine-tuning -> evaluation on the shipped sample; draws
    ``training_curves.png`` (the fine-tuning's) and ``accuracy_vs_epsilon.png`` into
    ``out_dir``; returns the provenance records."""
    from acl_tf.configs import EvaluateConfig, FinetuneConfig, PretrainConfig, load_config
    from acl_tf.evaluation.report import plot_accuracy_vs_epsilon
    from acl_tf.tasks.evaluate import evaluate
    from acl_tf.tasks.finetune import run_finetuning
    from acl_tf.tasks.fit import plot_history
    from acl_tf.tasks.pretrain import run_pretraining

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = work_dir is not None
    work = Path(work_dir) if keep else Path(tempfile.mkdtemp(prefix="acl_tf_figures_"))
    try:
        seconds = {}
        start = time.time()
        pre = load_config(PretrainConfig, "pretrain", *SMOKE_PRETRAIN)
        run_pretraining(pre, work / "pretrain", verbose=0)
        seconds["pretrain"] = time.time() - start

        start = time.time()
        fine = load_config(FinetuneConfig, "finetune", *SMOKE_FINETUNE)
        _, record = run_finetuning(fine, work / "finetune", pretrained=work / "pretrain",
                                   verbose=0)
        seconds["finetune"] = time.time() - start
        history = json.loads((work / "finetune" / "history.json").read_text())
        curves = out_dir / "training_curves.png"
        plot_history(history, curves, title=f"Smoke run: AFF fine-tuning of a smoke DS encoder "
                                             f"on {fine.data.source}")

        start = time.time()
        evaluation = load_config(EvaluateConfig, "evaluate", *SMOKE_EVALUATE)
        report, _ = evaluate(work / "finetune", work / "evaluate" / "report.json", evaluation)
        seconds["evaluate"] = time.time() - start
        sweep = plot_accuracy_vs_epsilon(report, out_dir / "accuracy_vs_epsilon.png")
        if sweep is None:
            raise RuntimeError("the smoke evaluation made no accuracy-vs-epsilon sweep")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    command = "python scripts/make_figures.py smoke"
    runs = (f"`acl_tf.tasks.pretrain.run_pretraining` with preset "
            f"pretrain/{_preset(SMOKE_PRETRAIN)} ({seconds['pretrain']:.0f} s), then `acl_tf.tasks.finetune.run_finetuning` of "
            f"that encoder with preset finetune/{_preset(SMOKE_FINETUNE)} "
            f"({seconds['finetune']:.0f} s)")
    best = record["best"]
    return {
        "images/training_curves.png": {
            "what": (f"training curves of a smoke run: AFF (TRADES) fine-tuning of a smoke DS "
                     f"encoder on {fine.data.source} ({len(history)} epochs; its best epoch "
                     f"{record['best_epoch']}: validation TA {100 * best['val_acc']:.1f}%, "
                     f"PGD-{fine.eval_attack.steps} RA {100 * best['val_adv_acc']:.1f}% on "
                     f"{record['val_size']} held-out images)"),
            "command": command, "data": runs, **_file_info(curves)},
        "images/accuracy_vs_epsilon.png": {
            "what": (f"accuracy against epsilon of the smoke fine-tuned model of "
                     f"images/training_curves.png (smoke evaluation: PGD-"
                     f"{evaluation.sweep_steps}, {report['num_examples']} class-balanced test "
                     f"images of {evaluation.data.source})"),
            "command": command,
            "data": (f"{runs}, then `acl_tf.tasks.evaluate.evaluate` of its best.keras with "
                     f"preset evaluate/{_preset(SMOKE_EVALUATE)} ({seconds['evaluate']:.0f} s)"),
            **_file_info(sweep)},
    }


def _preset(spec) -> str:
    name, overrides = spec
    return name + "".join(f" --set={o}" for o in overrides)


# -- provenance ----------------------------------------------------------------------------------
def cpu_name() -> str:
    """The processor's model name (``lscpu``), else what the platform module knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "gpus": len(gpus),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def _file_info(path) -> dict:
    return {"bytes": Path(path).stat().st_size,
            "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_captions(records: dict, images_dir=IMAGES_DIR) -> Path:
    """Merges ``records`` into ``images_dir/figures.json`` and rewrites ``README.md`` from it."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    store = images_dir / PROVENANCE
    known = json.loads(store.read_text()) if store.exists() else {}
    known.update(records)
    store.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    lines = ["# Pictures of the docs and what produced them", "",
             "Written by `scripts/make_figures.py` (from `figures.json` beside this file); "
             "paths are relative to `docs/`. Regenerate with "
             "`python scripts/make_figures.py study|smoke|all`. The seconds of the smoke runs "
             "were measured with the CPU cores shared with other jobs.", ""]
    for name, rec in sorted(known.items()):
        m = rec["machine"]
        lines += [f"## `{name}`", "", f"{rec['what'][0].upper()}{rec['what'][1:]}.", "",
                  f"- command: `{rec['command']}`",
                  f"- runs: {rec['data']}",
                  f"- machine: {m['cpu']}, {m['cpu_cores']} CPU cores, {m['gpus']} GPU; "
                  f"Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}",
                  f"- made: {rec['made']}, {rec['bytes'] / 1024:.0f} KB", ""]
    path = images_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("study", "smoke", "all"))
    parser.add_argument("--study_dir", default=str(STUDY_DIR),
                        help="folder of study.json (the study figures go there too)")
    parser.add_argument("--images_dir", default=str(IMAGES_DIR),
                        help="folder of the smoke figures and the captions")
    parser.add_argument("--work_dir", default=None,
                        help="keep the smoke runs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    info = machine()
    records = {}
    if args.what in ("study", "all"):
        records.update(make_study_figures(args.study_dir))
    if args.what in ("smoke", "all"):
        records.update(make_smoke_figures(args.images_dir, args.work_dir))
    for rec in records.values():
        rec["machine"] = info
    captions = write_captions(records, args.images_dir)
    for name, rec in records.items():
        print(f"{name}: {rec['bytes'] / 1024:.0f} KB")
    print(f"captions: {captions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
