"""Linear separability of pre-trained features (paper Table 5): SLF and ALF with each BN branch.

Each of the (up to) four protocols is an ordinary fine-tuning run
(:func:`acl_tf.tasks.finetune.run_finetuning`) in ``model_dir/<mode>_<bn>/``; its
``best.keras`` (model selection on robust validation accuracy) is measured on the test split:
TA = clean accuracy, RA = accuracy under the config's ``eval_attack`` (PGD-20). The table goes to
``model_dir/linear_separability.json`` and ``model_dir/linear_separability.md``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from absl import logging

from acl_tf.configs import FinetuneConfig
from acl_tf.core import run_dir as rd
from acl_tf.core.io import write_json_atomic, write_text_atomic
from acl_tf.tasks.encoders import encoder_path, encoder_spec, use_pretrained
from acl_tf.tasks.finetune import run_finetuning

PROTOCOLS = (("slf", "adv"), ("slf", "normal"), ("alf", "adv"), ("alf", "normal"))


def markdown_table(rows: Sequence[dict], attack_steps: int, title: str = "") -> str:
    """The rows as a Markdown table (accuracies in percent)."""
    lines = [f"# Linear separability{': ' + title if title else ''}", "",
             f"| protocol | BN | TA (%) | RA (%, PGD-{attack_steps}) | best epoch | "
             "val TA (%) | val RA (%) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['bn']} | {100 * r['ta']:.2f} | {100 * r['ra']:.2f} "
                     f"| {r['best_epoch']} | {100 * r['val_ta']:.2f} | {100 * r['val_ra']:.2f} |")
    return "\n".join(lines) + "\n"


def run_linear_separability(config: FinetuneConfig, model_dir, pretrained: Optional[str] = None,
                            resume: bool = False, protocols=PROTOCOLS) -> list:
    """Runs SLF/ALF x adv/normal BN on the frozen encoder; returns and writes the table rows.

    ``config.mode`` and ``config.bn`` are replaced per protocol and the test split is always
    measured. With a single-BN encoder only one BN row per protocol is run (both would be equal).
    ``resume`` resumes (or skips, if finished) the per-protocol runs already in ``model_dir``.
    """
    config = use_pretrained(config, str(pretrained) if pretrained is not None else None)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    dual = encoder_spec(encoder_path(config.pretrained))["dual_bn"] if config.pretrained else (
        config.model.bn != "single")
    rows = []
    for mode, bn in protocols:
        if not dual and bn != protocols[0][1]:
            continue
        run_config = dataclasses.replace(config, mode=mode, bn=bn, evaluate_test=True)
        run_dir = model_dir / f"{mode}_{bn}"
        logging.info("linear separability: %s with the %s BN -> %s", mode.upper(), bn, run_dir)
        _, metrics = run_finetuning(run_config, run_dir, resume=resume)
        rows.append({"protocol": mode.upper(), "bn": bn if dual else "single",
                     "ta": metrics["test"]["acc"], "ra": metrics["test"]["adv_acc"],
                     "best_epoch": metrics["best_epoch"], "val_ta": metrics["best"]["val_acc"],
                     "val_ra": metrics["best"]["val_adv_acc"], "test_images":
                     metrics["test"]["count"], "run_dir": str(run_dir)})
    summary = {"pretrained": config.pretrained, "eval_attack": dataclasses.asdict(
        config.eval_attack), "epochs": config.epochs, "rows": rows}
    write_json_atomic(model_dir / rd.LINEAR_SUMMARY, summary)
    write_text_atomic(model_dir / rd.LINEAR_TABLE,
                      markdown_table(rows, config.eval_attack.steps, str(config.pretrained or "RI")))
    return rows
