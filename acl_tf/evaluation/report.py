"""Writes an evaluation report: ``report.json``, a Markdown summary beside it and the
accuracy-vs-epsilon plot (``accuracy_vs_epsilon.png``, matplotlib Agg backend).

Every file is written to a temporary name and renamed, so a crash never leaves a partial file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from acl_tf.core.io import write_text_atomic
from acl_tf.evaluation.subset import summary_line

__all__ = ["PLOT_NAME", "write_report", "render_markdown", "plot_accuracy_vs_epsilon"]

PLOT_NAME = "accuracy_vs_epsilon.png"


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    """The report as Markdown tables (accuracies in percent)."""
    lines = ["# Robustness evaluation", ""]
    data = report.get("data", {})
    images = (summary_line(data) if "class_counts" in data
              else f"{report['num_examples']} images")
    lines += [f"- model: `{report.get('model')}`",
              f"- data: `{data.get('source')}` split `{data.get('split')}`, {images}",
              f"- BN branch: `{report['branch']}`",
              f"- created: {report.get('created', 'n/a')}", ""]
    lines += ["| attack | accuracy (%) | correct / total | settings |", "|---|---|---|---|"]
    for r, line in zip(report["attacks"], report["attacks_run"]):
        lines.append(f"| {r['name']} | {_pct(r['accuracy'])} | {r['num_correct']} / "
                     f"{r['num_examples']} | {_cell(line)} |")
    corruptions = report.get("corruptions")
    if corruptions:
        lines.append(f"| corruptions (CIFAR-10-C mean) | {_pct(corruptions['mean'])} | | "
                     f"{len(corruptions['num_examples'])} corruption/severity configs |")
    if report.get("accuracy_vs_epsilon"):
        lines += ["", "## Accuracy vs epsilon (PGD)", "",
                  "| epsilon (/255) | accuracy (%) | steps | step (/255) | restarts |",
                  "|---|---|---|---|---|"]
        for p in report["accuracy_vs_epsilon"]:
            lines.append(f"| {p['epsilon_255']:g} | {_pct(p['accuracy'])} | {p['steps']} | "
                         f"{p['step_size_255']:g} | {p['restarts']} |")
    if report.get("guards"):
        lines += ["", "## Gradient-masking checks", "", "| check | status | details |",
                  "|---|---|---|"]
        for g in report["guards"]:
            lines.append(f"| {g['name']} | **{g['status']}** | {_cell(g['message'])} |")
    if report.get("guard_runs"):
        lines += ["", "Extra PGD runs made for the checks: " + ", ".join(
            f"{r['name']} {_pct(r['accuracy'])}%" for r in report["guard_runs"]) + "."]
    if corruptions:
        severities = list(corruptions["mean_by_severity"])
        lines += ["", "## CIFAR-10-C accuracy (%)", "",
                  "| corruption | " + " | ".join(f"s{s}" for s in severities) + " | mean |",
                  "|---" * (len(severities) + 2) + "|"]
        for name, by_sev in corruptions["accuracy"].items():
            lines.append(f"| {name} | " + " | ".join(_pct(by_sev[s]) for s in severities)
                         + f" | {_pct(corruptions['mean_by_corruption'][name])} |")
        lines.append("| **mean** | " + " | ".join(
            _pct(corruptions["mean_by_severity"][s]) for s in severities)
            + f" | **{_pct(corruptions['mean'])}** |")
    versions = report.get("versions")
    if versions:
        lines += ["", "## Versions", ""]
        lines += [f"- {k}: {v}" for k, v in versions.items()]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_epsilon(report: dict, path) -> Optional[Path]:
    """Plots robust accuracy against epsilon (and AutoAttack's point); None without a sweep."""
    points = report.get("accuracy_vs_epsilon") or []
    if not points:
        return None
    from matplotlib.figure import Figure      # not pyplot: leaves a notebook's backend alone

    path = Path(path)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    eps = [p["epsilon_255"] for p in points]
    acc = [100 * p["accuracy"] for p in points]
    ax.plot(eps, acc, "o-", label=f"PGD-{points[-1]['steps']} (step = eps/"
            f"{points[-1]['epsilon_255'] / max(points[-1]['step_size_255'], 1e-12):g})")
    for r in report.get("attacks", []):
        if r["name"] == "autoattack":
            ax.plot([r["settings"]["epsilon_255"]], [100 * r["accuracy"]], "r*",
                    markersize=12, label="AutoAttack")
    ax.set_xlabel("epsilon (x 1/255, L-inf)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Accuracy vs epsilon (BN {report.get('branch')}, "
                 f"n={report['num_examples']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def write_report(report: dict, output) -> dict:
    """Writes ``output`` (JSON), the Markdown beside it (same name, ``.md``) and the plot
    (``accuracy_vs_epsilon.png`` in the same directory); returns the paths written."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(report, indent=2, sort_keys=False) + "\n")
    markdown = output.with_suffix(".md")
    write_text_atomic(markdown, render_markdown(report))
    paths = {"json": str(output), "markdown": str(markdown)}
    plot = plot_accuracy_vs_epsilon(report, output.parent / PLOT_NAME)
    if plot is not None:
        paths["plot"] = str(plot)
    return paths
