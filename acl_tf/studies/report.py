"""What the reports of every study share: the software and machine they ran on, percentages, an
atomic figure write, and the TA/RA trade-off figure (this study's models beside a reference's).

Figures use matplotlib's object API (no pyplot), which leaves the global backend alone.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["draw_tradeoff", "environment", "pct", "savefig", "seeds_text"]


def environment() -> dict:
    """``{"versions": {python, tensorflow, keras}, "machine": "<arch>, N CPU cores, M GPU"}``."""
    import keras
    import tensorflow as tf

    return {"versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                         "keras": keras.__version__},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"{len(tf.config.list_physical_devices('GPU'))} GPU"}


def pct(value) -> str:
    """A fraction in percent with two decimals; ``-`` for None."""
    return "-" if value is None else f"{100 * value:.2f}"


def seeds_text(seeds) -> str:
    """``fine-tuning seed 0``, ``fine-tuning seeds 0, 1``, or a count where seeds are unknown."""
    known = [str(s) for s in seeds if s is not None]
    if not known:
        return "one fine-tuning seed" if len(seeds) == 1 else f"{len(seeds)} fine-tuning seeds"
    return ("fine-tuning seed " if len(known) == 1 else "fine-tuning seeds ") + ", ".join(known)


def savefig(fig, path, dpi=100) -> Path:
    """Writes ``fig`` to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return path


def draw_tradeoff(points: Sequence[tuple], path, *, colors: Mapping[str, str],
                  names: Mapping[str, str], markers: Mapping[str, tuple], reference_title: str,
                  caption: str, xlabels: tuple[str, str] = ("RA (%)", "RA (%)")
                  ) -> Optional[Path]:
    """Test TA against RA: this study's models (left) beside a reference's figures (right).

    ``points``: ``(model, kind, runs, reference)`` in drawing order, ``runs`` the model's
    fine-tuning runs (dicts with ``ta``, ``ra`` and optionally ``seed``, ``test_images``),
    ``reference`` its ``(TA, RA)`` in percent or None. Colour: the model (``colors``, legend
    label from ``names``); marker: the kind (``markers[kind] = (marker, label)``). A model run
    with several seeds is drawn as a filled mean with a hollow marker per seed, joined by a thin
    line (their spread). Legends instead of labels on the points; ``caption`` (e.g. "AFF
    models") titles the figure with the seed where there is one. None without points."""
    if not points:
        return None
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    several = False
    test_images = set()
    for model, kind, runs, reference in points:
        color, marker = colors.get(model, "k"), markers[kind][0]
        runs = [r for r in runs if r.get("ta") is not None and r.get("ra") is not None]
        test_images.update(r["test_images"] for r in runs if r.get("test_images"))
        ras, tas = [100 * r["ra"] for r in runs], [100 * r["ta"] for r in runs]
        if len(runs) > 1:
            several = True
            axes[0].plot(ras, tas, color=color, linewidth=0.8, alpha=0.6)
            axes[0].scatter(ras, tas, s=28, marker=marker, facecolors="none", edgecolors=color)
        if runs:
            axes[0].scatter([sum(ras) / len(ras)], [sum(tas) / len(tas)], s=60, marker=marker,
                            color=color, edgecolors="k", linewidths=0.5, zorder=3)
        if reference is not None:
            axes[1].scatter([reference[1]], [reference[0]], s=60, marker=marker, color=color,
                            edgecolors="k", linewidths=0.5, zorder=3)
    images = f"{next(iter(test_images)):,} test images" if len(test_images) == 1 else "test"
    seeds = max((tuple(r.get("seed") for r in p[2]) for p in points), key=len)
    axes[0].set(title=f"This study ({images})", xlabel=xlabels[0], ylabel="TA (%)")
    axes[1].set(title=reference_title, xlabel=xlabels[1], ylabel="TA (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.margins(0.12)
    models = list(dict.fromkeys(p[0] for p in points))
    kinds = list(dict.fromkeys(p[1] for p in points))
    model_handles = [Line2D([], [], linestyle="none", marker="o", markersize=8,
                            color=colors.get(m, "k"), label=names.get(m, m)) for m in models]
    kind_handles = [Line2D([], [], linestyle="none", marker=markers[k][0], markersize=7,
                           color="0.4", label=markers[k][1]) for k in kinds]
    if several:
        kind_handles += [Line2D([], [], linestyle="-", linewidth=0.8, marker="o", markersize=5,
                                markerfacecolor="none", color="0.4", label=seeds_text(seeds)),
                         Line2D([], [], linestyle="none", marker="o", markersize=8, color="0.4",
                                markeredgecolor="k", label="mean (or only seed)")]
    fig.legend(handles=model_handles, loc="lower center", bbox_to_anchor=(0.5, 0.06),
               ncol=len(model_handles), frameon=False, fontsize=9)
    fig.legend(handles=kind_handles, loc="lower center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(kind_handles), frameon=False, fontsize=9, columnspacing=1.2)
    if not several:
        fig.suptitle(f"{caption}, {seeds_text(seeds)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return savefig(fig, path)
