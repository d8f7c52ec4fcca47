"""The machinery every study shares: a study is an ordered list of :class:`Stage` s, each an
ordinary run of a task in ``study_dir/<stage name>/``, run in order by :func:`run_stages`.

A stage that finished records it in ``study_dir/<stage name>/study_stage.json`` (wall seconds,
whether it was resumed, when it finished); :func:`run_stages` skips such stages and resumes the
others from their last checkpoint, so rerunning a study after a crash continues where it stopped.
After every stage the study's report callback rewrites its report from whatever has finished.
:func:`stage_seconds` and :func:`finetune_row` read the finished runs back for the reports.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import keras
from absl import logging

from acl_tf.configs import to_dict
from acl_tf.core.io import write_json_atomic
from acl_tf.tasks.finetune import run_finetuning
from acl_tf.tasks.linear_eval import run_linear_separability
from acl_tf.tasks.postprocess import run_postprocess
from acl_tf.tasks.pretrain import run_pretraining
from acl_tf.tasks.selection import read_metrics

__all__ = ["KINDS", "STAGE_FILE", "Stage", "finetune_row", "run_stage", "run_stages",
           "stage_finished", "stage_seconds"]

STAGE_FILE = "study_stage.json"
#: What a stage runs: pre-training, a fine-tuning (AFF, SLF or ALF, as its config's ``mode``
#: says), the linear-separability protocols, or post-processing (DynACL++) of an encoder.
KINDS = ("pretrain", "finetune", "linear", "postprocess")


@dataclasses.dataclass
class Stage:
    """One run of a study: ``kind`` is one of :data:`KINDS`; ``encoder`` names the stage whose
    encoder a fine-tuning, linear evaluation or post-processing starts from (None: random init,
    for a fine-tuning only)."""

    name: str
    kind: str
    config: Any
    encoder: Optional[str] = None


def stage_finished(study_dir, stage: Stage) -> bool:
    return (Path(study_dir) / stage.name / STAGE_FILE).exists()


def run_stage(stage: Stage, study_dir, verbose) -> None:
    """Runs (or resumes) ``stage`` in ``study_dir/<stage name>/``."""
    study_dir = Path(study_dir)
    run_dir = study_dir / stage.name
    encoder = str(study_dir / stage.encoder) if stage.encoder else None
    if stage.kind == "pretrain":
        run_pretraining(stage.config, run_dir, resume=True, verbose=verbose)
    elif stage.kind == "finetune":  # encoder None: random init (the config has no encoder)
        run_finetuning(stage.config, run_dir, pretrained=encoder, resume=True, verbose=verbose)
    elif stage.kind == "linear":
        run_linear_separability(stage.config, run_dir, pretrained=encoder, resume=True)
    elif stage.kind == "postprocess":
        run_postprocess(stage.config, run_dir, pretrained=encoder, resume=True, verbose=verbose)
    else:
        raise ValueError(f"Unknown stage kind {stage.kind!r}; expected one of {KINDS}.")


def run_stages(stages: Sequence[Stage], study_dir, config, report: Callable[[], dict],
               verbose=2, log: Callable[[str], None] = logging.info) -> dict:
    """Runs (or resumes) every stage not finished yet, in order; ``config`` (the study's) goes
    to ``study_dir/study_config.json``; ``report()`` rewrites the report before the first stage
    and after each one. Returns the last report."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(study_dir / "study_config.json", to_dict(config))
    result = report()
    for i, stage in enumerate(stages, 1):
        if stage_finished(study_dir, stage):
            log(f"[{i}/{len(stages)}] {stage.name}: finished earlier, skipped")
            continue
        log(f"[{i}/{len(stages)}] {stage.name}: running in {study_dir / stage.name}")
        start = time.time()
        resumed = (study_dir / stage.name).exists()
        run_stage(stage, study_dir, verbose)
        seconds = time.time() - start
        write_json_atomic(study_dir / stage.name / STAGE_FILE,
                          {"seconds": round(seconds, 1), "resumed": resumed,
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S %z")})
        log(f"[{i}/{len(stages)}] {stage.name}: done in {seconds / 60:.1f} min")
        result = report()
        keras.backend.clear_session()
        gc.collect()
    return result


# -- reading finished stages ---------------------------------------------------------------------
def stage_seconds(run_dir) -> Optional[float]:
    """Wall seconds of a finished stage (with those of earlier records of it kept beside
    ``STAGE_FILE`` as ``study_stage.*.json``, e.g. a first pass that was re-tested)."""
    run_dir = Path(run_dir)
    if not (run_dir / STAGE_FILE).exists():
        return None
    return sum(json.loads(p.read_text())["seconds"] for p in run_dir.glob("study_stage*.json"))


def finetune_row(run_dir) -> Optional[dict]:
    """TA/RA on the test images and the per-epoch validation record of a finished fine-tuning
    stage (None while it has not finished)."""
    run_dir = Path(run_dir)
    if not (run_dir / STAGE_FILE).exists():
        return None
    metrics = read_metrics(run_dir)
    return {"ta": metrics["test"]["acc"], "ra": metrics["test"]["adv_acc"],
            "test_images": metrics["test"]["count"], "best_epoch": metrics["best_epoch"],
            "epochs": metrics["epochs"], "seconds": stage_seconds(run_dir)}
