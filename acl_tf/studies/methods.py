"""The comparison of ACL's successors on one budget: ACL (DS), DynACL, DynACL-AIR and their "++"
post-processing, each fine-tuned alike (AFF and SLF), beside the RobustSSL benchmark's figures.

:func:`plan` turns a :class:`~acl_tf.configs.MethodsStudyConfig` into
:class:`~acl_tf.studies.stages.Stage` s in ``study_dir``:

* ``pretrain/<key>``: a method's pre-training (methods whose resolved pre-training configs are
  equal share the run of the first of them: DynACL++ post-processes DynACL's encoder);
* ``postprocess/<key>``: the DynACL++ stage (k-means pseudo-labels, LP, AFT) of a method that has
  one, from its pre-trained encoder;
* ``<mode>/<key>_seed<seed>``: a fine-tuning (``aff``, ``slf`` or ``alf``) of the method's final
  encoder with fine-tuning seed ``seed``, the same config for every method.

Order: for each seed, each mode, each method, its fine-tuning, preceded by the pre-training and
post-processing it needs where they have not run yet; so the AFF comparison of the first seed
comes first. :func:`run_study` runs the stages as the reproduction study does (skipping finished
ones, resuming the interrupted one: :func:`acl_tf.studies.stages.run_stages`); after each stage
:func:`write_report` writes ``report_dir/study.json``, ``methods.md`` (per mode a table of test
TA / RA beside the published figures, and the stage times) and ``methods_ta_ra.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from absl import logging

from acl_tf.configs import (
    FinetuneConfig,
    MethodsStudyConfig,
    PostprocessConfig,
    PretrainConfig,
    StudyMethod,
    load_config,
    to_dict,
)
from acl_tf.core.io import write_json_atomic, write_text_atomic
from acl_tf.studies.report import draw_tradeoff, environment, pct
from acl_tf.studies.stages import Stage, finetune_row, run_stages, stage_finished, stage_seconds
from acl_tf.tasks.selection import read_summary

__all__ = ["FIGURE", "MARKDOWN", "PUBLISHED", "PUBLISHED_SOURCE", "collect", "finetune_stage",
           "plan", "plot_tradeoff", "render_markdown", "run_study", "write_report"]

#: The RobustSSL benchmark's leaderboard (CIFAR-10, ResNet-18, eps 8/255), in percent: (clean
#: accuracy, robust accuracy under AutoAttack), by fine-tuning protocol and method.
PUBLISHED = {
    "aff": {"acl": (81.25, 49.60), "dynacl": (81.86, 50.52), "dynacl++": (81.93, 50.34),
            "dynacl-air": (82.74, 50.58), "dynacl-air++": (82.36, 50.79)},
    "slf": {"acl": (78.22, 39.17), "dynacl-air++": (81.80, 46.99)},
}
PUBLISHED_SOURCE = ("RobustSSL benchmark leaderboard: CIFAR-10, ResNet-18, 1,000 pre-training "
                    "epochs on 50,000 images, robust accuracy under AutoAttack (eps 8/255)")
MARKDOWN = "methods.md"
FIGURE = "methods_ta_ra.png"
MODE_NAMES = {"aff": "AFF", "slf": "SLF", "alf": "ALF"}
#: The marker of a fine-tuned model by its protocol.
MODE_MARKERS = {"aff": ("o", "AFF"), "slf": ("s", "SLF"), "alf": ("^", "ALF")}


# -- the plan ------------------------------------------------------------------------------------
def pretrain_config(config: MethodsStudyConfig, method: StudyMethod) -> PretrainConfig:
    return load_config(PretrainConfig, "pretrain", method.pretrain,
                       [*config.pretrain_overrides, *method.pretrain_overrides])


def postprocess_config(config: MethodsStudyConfig, method: StudyMethod
                       ) -> Optional[PostprocessConfig]:
    if not method.postprocess:
        return None
    return load_config(PostprocessConfig, "postprocess", method.postprocess,
                       [*config.postprocess_overrides, *method.postprocess_overrides])


def finetune_config(config: MethodsStudyConfig, mode: str, seed: int) -> FinetuneConfig:
    """The fine-tuning every method gets in protocol ``mode`` with seed ``seed``."""
    linear = config.linear_overrides if mode != "aff" else ()
    return load_config(FinetuneConfig, "finetune", config.finetune,
                       [*config.finetune_overrides, *linear, f"mode={mode}", f"bn={config.bn}",
                        f"seed={seed}"])


def finetune_stage(mode: str, key: str, seed: int) -> str:
    """The name of the fine-tuning stage of method ``key`` in protocol ``mode`` with ``seed``."""
    return f"{mode}/{key}_seed{seed}"


def _encoders(config: MethodsStudyConfig) -> tuple[dict, dict]:
    """``({key: (its pre-training stage, the stage whose encoder it fine-tunes)}, {key: the stages
    that make that encoder and have not appeared for an earlier method})``."""
    pretrained: dict = {}          # stage name -> its PretrainConfig
    encoders, makes = {}, {}
    for method in config.methods:
        pre = pretrain_config(config, method)
        name = next((n for n, c in pretrained.items() if c == pre), None)
        makes[method.key] = []
        if name is None:
            name = f"pretrain/{method.key}"
            pretrained[name] = pre
            makes[method.key].append(Stage(name, "pretrain", pre))
        encoder = name
        post = postprocess_config(config, method)
        if post is not None:
            encoder = f"postprocess/{method.key}"
            makes[method.key].append(Stage(encoder, "postprocess", post, name))
        encoders[method.key] = (name, encoder)
    return encoders, makes


def plan(config: MethodsStudyConfig) -> list[Stage]:
    """The study's stages, in the order they run (see the module docstring)."""
    encoders, makes = _encoders(config)
    stages = []
    for seed in config.seeds:
        for mode in config.modes:
            fine = finetune_config(config, mode, seed)
            for method in config.methods:
                stages += makes.pop(method.key, ())
                stages.append(Stage(finetune_stage(mode, method.key, seed), "finetune", fine,
                                    encoders[method.key][1]))
    return stages


def run_study(config: MethodsStudyConfig, study_dir, report_dir=None, verbose=2,
              log: Callable[[str], None] = logging.info) -> dict:
    """Runs (or resumes) every stage of ``config`` and returns the report (see
    :func:`write_report`, written to ``report_dir``, default ``study_dir``, after each stage)."""
    report_dir = Path(report_dir) if report_dir is not None else Path(study_dir)
    return run_stages(plan(config), study_dir, config,
                      lambda: write_report(config, study_dir, report_dir), verbose, log)


# -- the report ----------------------------------------------------------------------------------
def collect(config: MethodsStudyConfig, study_dir) -> dict:
    """Every finished result of the study in ``study_dir``, by method key (in the config's order):
    ``name``, ``published`` (leaderboard row or None), ``pretrain`` (the stage of its
    pre-training, perhaps another method's) and its ``pretrain_seconds``,
    ``postprocess_seconds`` and ``cluster_purity`` (None without post-processing or before it
    finished), and ``runs``: per mode the finished fine-tunings (rows of
    :func:`~acl_tf.studies.stages.finetune_row` with their ``seed``)."""
    study_dir = Path(study_dir)
    encoders, _ = _encoders(config)
    results = {}
    for method in config.methods:
        pretrain, encoder = encoders[method.key]
        post_seconds = stage_seconds(study_dir / encoder) if encoder != pretrain else None
        runs = {}
        for mode in config.modes:
            rows = [finetune_row(study_dir / finetune_stage(mode, method.key, seed))
                    for seed in config.seeds]
            runs[mode] = [{**row, "seed": seed} for row, seed in zip(rows, config.seeds)
                          if row is not None]
        results[method.key] = {
            "name": method.name, "published": method.published, "pretrain": pretrain,
            "pretrain_seconds": stage_seconds(study_dir / pretrain),
            "postprocess_seconds": post_seconds,
            "cluster_purity": (read_summary(study_dir / encoder).get("cluster_purity")
                               if post_seconds is not None else None),
            "runs": runs}
    return results


def _mean(rows: list, field: str) -> Optional[float]:
    """The mean of ``field`` over the seeds' rows, in percent (None without rows)."""
    return 100 * sum(r[field] for r in rows) / len(rows) if rows else None


def _cell(rows: list, field: str, seeds) -> str:
    """The mean over the finished seeds in percent, and with several ``seeds`` each seed's value
    in brackets (``-`` for one not finished)."""
    if not rows:
        return "-"
    mean = f"{_mean(rows, field):.2f}"
    if len(seeds) < 2:
        return mean
    by_seed = {r["seed"]: r[field] for r in rows}
    return f"{mean} ({' / '.join(pct(by_seed.get(seed)) for seed in seeds)})"


def _figure(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _difference(value, base) -> str:
    return "-" if value is None or base is None else f"{value - base:+.2f}"


def _minutes(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def _protocol_table(results: dict, mode: str, attack: int, seeds) -> list:
    """The lines of one protocol's table."""
    keys = list(results)
    published = PUBLISHED.get(mode, {})
    base = results[keys[0]]
    images = {r["test_images"] for row in results.values() for r in row["runs"][mode]}
    count = next(iter(images)) if len(images) == 1 else None
    seeds_note = (f"fine-tuning seed {seeds[0]}" if len(seeds) == 1 else
                  f"mean of fine-tuning seeds {', '.join(map(str, seeds))} (each in brackets)")
    lines = [f"{MODE_NAMES[mode]}: test TA / RA (PGD-{attack}) on "
             + (f"{count:,} test images" if count else "the test images")
             + f", {seeds_note}; published: clean and AutoAttack (AA) accuracy; the "
             f"differences are to {base['name']}. In %.", "",
             f"| method | TA | RA (PGD-{attack}) | TA - base | RA - base | published TA | "
             "published RA (AA) | published TA - base | published RA - base |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_pub = published.get(base["published"], (None, None))
    for row in results.values():
        rows, pub = row["runs"][mode], published.get(row["published"], (None, None))
        ours = [_difference(_mean(rows, f), _mean(base["runs"][mode], f)) for f in ("ta", "ra")]
        lines.append(f"| {row['name']} | {_cell(rows, 'ta', seeds)} | {_cell(rows, 'ra', seeds)} | "
                     f"{ours[0]} | {ours[1]} | {_figure(pub[0])} | {_figure(pub[1])} | "
                     f"{_difference(pub[0], base_pub[0])} | {_difference(pub[1], base_pub[1])} |")
    if count:
        lines += ["", f"A test accuracy on {count:,} images has a standard error of up to "
                  f"{50 / count ** 0.5:.1f} points."]
    return lines + [""]


def render_markdown(report: dict) -> str:
    """Per fine-tuning protocol: test TA / RA of every method beside the published figures,
    and the differences to the first method; then the stage times."""
    results, settings = report["results"], report["settings"]
    attack, seeds, modes = settings["eval_attack_steps"], settings["seeds"], settings["modes"]
    lines = [f"Study `{settings['study_dir']}`; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
             + f"; {report['machine']}.", ""]
    if results:
        for mode in modes:
            lines += _protocol_table(results, mode, attack, seeds)
    lines += ["Wall minutes per stage (a pre-training shared by several methods counts once, "
              "under the first; fine-tunings summed over the seeds; the purity of the "
              "post-processing's k-means clusters is measured against the true labels, which the "
              "method never sees):", "",
              "| method | pre-training run | pre-training min | post-processing min | "
              "cluster purity | " + " | ".join(f"{MODE_NAMES[m]} min" for m in modes) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * len(modes)]
    counted = set()
    for row in results.values():
        shared = row["pretrain"] in counted
        counted.add(row["pretrain"])
        purity = "-" if row["cluster_purity"] is None else f"{row['cluster_purity']:.3f}"
        times = [_minutes(sum(r["seconds"] for r in row["runs"][m]) if row["runs"][m] else None)
                 for m in modes]
        lines.append(f"| {row['name']} | `{row['pretrain']}` | "
                     f"{'shared' if shared else _minutes(row['pretrain_seconds'])} | "
                     f"{_minutes(row['postprocess_seconds'])} | {purity} | "
                     + " | ".join(times) + " |")
    lines += ["", f"Published: {PUBLISHED_SOURCE}. AutoAttack is stronger than PGD-{attack}, so "
              "the same model would show a higher RA here than in the published column; and "
              "this study's budget is a small fraction of theirs, so only the differences "
              "between methods can be set beside the published ones.", ""]
    return "\n".join(lines)


def _colors(keys) -> dict:
    return {key: f"C{i % 10}" for i, key in enumerate(keys)}


def plot_tradeoff(report: dict, path) -> Optional[Path]:
    """Test TA against RA of every fine-tuned model (colour: the method, marker: the protocol),
    beside the published figures (clean and AutoAttack accuracy) of every method of the study.
    None while no fine-tuning has finished."""
    results, settings = report["results"], report["settings"]
    if not any(row["runs"][mode] for row in results.values() for mode in settings["modes"]):
        return None
    points = [(key, mode, row["runs"][mode], PUBLISHED.get(mode, {}).get(row["published"]))
              for mode in settings["modes"] for key, row in results.items()]
    points = [p for p in points if p[2] or p[3] is not None]
    attack = settings["eval_attack_steps"]
    return draw_tradeoff(points, path, colors=_colors(results),
                         names={k: r["name"] for k, r in results.items()}, markers=MODE_MARKERS,
                         reference_title="Published (RobustSSL, full budget)",
                         caption="Fine-tuned models",
                         xlabels=(f"RA (%, PGD-{attack})", "RA (%, AutoAttack)"))


def write_report(config: MethodsStudyConfig, study_dir, report_dir) -> dict:
    """Collects the finished results and writes ``study.json``, ``methods.md`` and the figure
    into ``report_dir``; returns the report."""
    study_dir, report_dir = Path(study_dir), Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stages = plan(config)
    fine = {mode: finetune_config(config, mode, config.seeds[0]) for mode in config.modes}
    report = {
        "settings": {"study": to_dict(config), "study_dir": str(study_dir),
                     "modes": list(config.modes), "seeds": list(config.seeds),
                     "pretrain": {s.name: to_dict(s.config) for s in stages
                                  if s.kind == "pretrain"},
                     "postprocess": {s.name: to_dict(s.config) for s in stages
                                     if s.kind == "postprocess"},
                     "finetune": {mode: to_dict(c) for mode, c in fine.items()},
                     "eval_attack_steps": fine[config.modes[0]].eval_attack.steps,
                     "published": {"source": PUBLISHED_SOURCE, "figures": {
                         mode: {k: list(v) for k, v in rows.items()}
                         for mode, rows in PUBLISHED.items()}}},
        **environment(),
        "stages": {s.name: stage_finished(study_dir, s) for s in stages},
        "results": collect(config, study_dir),
    }
    write_json_atomic(report_dir / "study.json", report)
    text = render_markdown(report)
    if plot_tradeoff(report, report_dir / FIGURE):
        text += f"\n![{FIGURE}]({FIGURE})\n"
    write_text_atomic(report_dir / MARKDOWN, text)
    return report
