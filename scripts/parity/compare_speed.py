"""Times the reference PyTorch ACL step and acl-tf's in one run, beside each other, and writes
``benchmarks/reference_speed.{json,md}``.

Every configuration is one process, measured one at a time (nothing in parallel):

* ``reference``: ``scripts/parity/bench_reference.py`` in the PyTorch environment
  (``--torch_python``, the one of ``scripts/parity/requirements.txt``) on a snapshot of
  https://github.com/VITA-Group/Adversarial-Contrastive-Learning (``--acl_repo``);
* ``acl-tf``: ``python -m acl_tf.bench --variants=<variant>`` with the same batch, ResNet-18 width
  64 (the reference has no width argument), float32, steps and warm-up steps, without the floor
  and the input pipeline;
* ``acl-tf <label>`` for every ``--extra LABEL=SETTINGS``: acl-tf with settings in the project's
  hands. SETTINGS are words: ``NAME=VALUE`` words with an upper-case NAME are environment
  variables of the process (oneDNN's, e.g. ``TF_ENABLE_ONEDNN_OPTS=0``,
  ``TF_SET_ONEDNN_FPMATH_MODE=BF16``), the others ``acl_tf.bench`` flags (``--jit_compile``,
  ``--inter_op_threads=1``, ``--precision=mixed_bfloat16``).

``--rounds`` rounds, each measuring every variant's configurations in turn: the reference, then
acl-tf, then the extras, in even rounds; the mirror order in odd rounds, so that a drift of the
machine's load weighs on both sides alike. The 1-minute load average is recorded before every
process. Per configuration the table gives the median over rounds of each round's
``seconds_per_step`` (itself a median of ``--steps`` steps), every round's value, and the ratio
of acl-tf's time to the reference's (above 1: acl-tf is slower).

This script imports neither TensorFlow nor PyTorch. Run it on an otherwise idle machine: with
other processes on the cores, the reference's OpenMP threads lose far more than TensorFlow's
thread pool (measured on 2 loaded cores: the reference's S2S step at batch 4 took 2.3-5.5 s with
its default 2 threads, 0.8-0.9 s with 1), so a busy machine flatters acl-tf. ``--max_load``
waits before each process until the load average is below a bound. The full run, with the
settings worth comparing (about 15 minutes for the four plain configurations, about an hour with
these four extras, on 2 cores)::

    .venv/bin/python scripts/parity/compare_speed.py --acl_repo=SNAPSHOT_OF_ACL \\
        --torch_python="$PARITY_VENV"/bin/python --max_load=1.5 \\
        --extra='inter1=--inter_op_threads=1' \\
        --extra='onednn_off=TF_ENABLE_ONEDNN_OPTS=0' \\
        --extra='fpmath_bf16=TF_SET_ONEDNN_FPMATH_MODE=BF16' \\
        --extra='bf16=--precision=mixed_bfloat16'

(``inter1``: one inter-op thread, so that TensorFlow runs one op at a time on its intra-op
threads, as PyTorch does; ``onednn_off``: TensorFlow's own kernels; ``fpmath_bf16`` and ``bf16``
compute the convolutions in bfloat16, on AMX where the CPU has it: faster, but not the float32
arithmetic of the reference. XLA, ``--jit_compile``, is left out: on 2 busy CPU cores at width
16, batch 16 it took 2.3x (S2S) and 18x (DS) the time of the default step, and 40-100 s to
compile; XLA's CPU convolutions do not use oneDNN's convolution kernels.)

On a CPU with AVX-512, capping both sides' instruction sets at AVX2 emulates one without it (an
AMD EPYC before Zen 4). TensorFlow still turns oneDNN on under the cap (it reads the CPU, not the
cap), where on such a CPU it would leave it off: there, the ``onednn_off`` row is TensorFlow's
default, and the plain acl-tf row what ``TF_ENABLE_ONEDNN_OPTS=1`` gives::

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
    .venv/bin/python scripts/parity/compare_speed.py ... \\
        --extra='onednn_off=TF_ENABLE_ONEDNN_OPTS=0'

These variables are recorded with the results (``settings.environment``).

Check that everything runs (about 5 minutes on 2 cores, figures meaningless)::

    .venv/bin/python scripts/parity/compare_speed.py --acl_repo=SNAPSHOT_OF_ACL \\
        --torch_python="$PARITY_VENV"/bin/python --batch_size=4 --warmup_steps=1 --steps=2 \\
        --rounds=1 --output=/tmp/speed.json --markdown=/tmp/speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acl_tf.tasks.bench import RUNTIME_ENVIRONMENT  # imports no TensorFlow

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("s2s", "ds")
WIDTH = 64                      # the reference's ResNet-18 (no width argument)
_ENV_WORD = re.compile(r"^[A-Z][A-Z0-9_]*=")
#: Variables of this script's own environment that every process inherits and that change how
#: either side computes: TensorFlow's (acl_tf.bench records the same in each acl-tf run: oneDNN,
#: whose ``ONEDNN_`` caps PyTorch's copy also reads, threads, XLA) and PyTorch's and MKL's own
#: instruction-set caps and threads. Recorded with the results.
SHARED_ENVIRONMENT = RUNTIME_ENVIRONMENT + ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                                            "MKL_NUM_THREADS")
#: What a run's JSON contributes to the comparison, per variant.
FIGURES = ("seconds_per_step", "images_per_s", "cpu_seconds_per_step", "peak_memory_mb",
           "first_step_s", "step_times", "loss")


# -- configurations --------------------------------------------------------------------------------
def parse_extra(spec: str) -> dict:
    """``LABEL=SETTINGS`` -> ``{"label", "env": {NAME: VALUE}, "flags": [...]}``."""
    label, sep, settings = spec.partition("=")
    label = label.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
        raise ValueError(f"--extra {spec!r}: expected LABEL=SETTINGS, LABEL of letters, digits "
                         "and _.+-")
    env, flags = {}, []
    for word in shlex.split(settings):
        if _ENV_WORD.match(word):
            name, _, value = word.partition("=")
            env[name] = value
        elif word.startswith("--"):
            flags.append(word)
        else:
            raise ValueError(f"--extra {spec!r}: {word!r} is neither NAME=VALUE (an environment "
                             "variable, upper case) nor an acl_tf.bench --flag")
    if not env and not flags:
        raise ValueError(f"--extra {spec!r} sets nothing")
    return {"label": label, "env": env, "flags": flags}


def configurations(extras) -> list:
    """The configurations of one variant, in the order of an even round."""
    return ([{"name": "reference", "impl": "reference", "env": {}, "flags": []},
             {"name": "acl-tf", "impl": "acl-tf", "env": {}, "flags": []}]
            + [{"name": f"acl-tf {e['label']}", "impl": "acl-tf", "env": e["env"],
                "flags": e["flags"]} for e in extras])


def schedule(variants, extras, rounds: int) -> list:
    """``[(round, variant, configuration)]`` in the order they run."""
    order = []
    for r in range(rounds):
        for variant in variants:
            configs = configurations(extras)
            order += [(r, variant, c) for c in (configs if r % 2 == 0 else configs[::-1])]
    return order


def shown(cmd: list, args) -> list:
    """``cmd`` as the results record it: the machine's own paths replaced by placeholders
    (``$TORCH_PYTHON``, ``$ACL_REPO``, ``OUT.json``) or made relative to the checkout."""
    out = []
    for word in cmd:
        flag, sep, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if value == str(args.torch_python):
            value = "$TORCH_PYTHON"
        elif value == str(args.python):
            value = "python"
        elif value == str(args.acl_repo):
            value = "$ACL_REPO"
        elif flag == "--output":
            value = "OUT.json"
        elif value.startswith(str(REPO) + os.sep):
            value = os.path.relpath(value, REPO)
        out.append(f"{flag}{sep}{value}")
    return out


def command(args, variant: str, config: dict, output: Path) -> list:
    common = [f"--batch_size={args.batch_size}", f"--warmup_steps={args.warmup_steps}",
              f"--steps={args.steps}"]
    if config["impl"] == "reference":
        return [args.torch_python, str(REPO / "scripts" / "parity" / "bench_reference.py"),
                f"--acl_repo={args.acl_repo}", f"--variants={variant}", *common,
                f"--output={output}"]
    return [args.python, "-m", "acl_tf.bench", "--config=cpu_resnet18", f"--variants={variant}",
            f"--width={WIDTH}", *common, "--nofloor", "--nopipeline", *config["flags"],
            f"--output={output}"]


# -- measuring -------------------------------------------------------------------------------------
def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def wait_for_quiet(args, log) -> None:
    """With ``--max_load``: waits (at most ``--max_wait`` s) until the 1-minute load average is
    below it, polling every 10 s."""
    if not args.max_load:
        return
    deadline = time.monotonic() + args.max_wait
    load = load_average()
    if load is not None and load >= args.max_load:
        log(f"  load {load} >= {args.max_load}: waiting (at most {args.max_wait:.0f} s)")
    while load is not None and load >= args.max_load and time.monotonic() < deadline:
        time.sleep(10)
        load = load_average()


def run_one(args, r: int, variant: str, config: dict, workdir: Path, log) -> dict:
    out = workdir / f"round{r}_{variant}_{config['name'].replace(' ', '_')}.json"
    cmd = command(args, variant, config, out)
    env = {**os.environ, **config["env"]}
    wait_for_quiet(args, log)
    record = {"round": r, "variant": variant, "config": config["name"], "impl": config["impl"],
              "env": config["env"], "flags": config["flags"], "command": shown(cmd, args),
              "load_before": load_average(), "started": time.strftime("%H:%M:%S")}
    log(f"round {r + 1}/{args.rounds}: {variant} {config['name']} (load {record['load_before']})")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=args.timeout)
    record["process_s"] = round(time.perf_counter() - start, 1)
    record["returncode"] = proc.returncode
    if proc.returncode != 0 or not out.exists():
        record["error"] = (proc.stderr or proc.stdout)[-3000:]
        log(f"  FAILED (exit {proc.returncode}):\n{record['error']}")
        return record
    result = json.loads(out.read_text())
    measured = result["variants"][variant]
    record.update({k: measured[k] for k in FIGURES if k in measured})
    record["load_after"] = measured.get("load_after")
    record["machine"] = result.get("machine", {})
    if config["impl"] == "reference":
        record["reference"] = result.get("reference")
    log(f"  {record['seconds_per_step']:.3f} s/step, {record['images_per_s']:.1f} images/s, "
        f"peak {record['peak_memory_mb']:.0f} MB ({record['process_s']:.0f} s in all)")
    return record


# -- summary ---------------------------------------------------------------------------------------
def summarize(runs: list, variants, extras, batch_size: int) -> dict:
    """Per (variant, configuration): the median over rounds and each round's figures; the
    acl-tf/reference ratios of the medians."""
    table = {}
    for variant in variants:
        rows = {}
        for config in configurations(extras):
            mine = [r for r in runs if r["variant"] == variant and r["config"] == config["name"]]
            ok = [r for r in mine if "seconds_per_step" in r]
            row = {"impl": config["impl"], "env": config["env"], "flags": config["flags"],
                   "rounds": len(ok), "failed": len(mine) - len(ok),
                   "per_round_s": [r["seconds_per_step"] for r in ok],
                   "load_before": [r["load_before"] for r in ok]}
            if ok:
                seconds = statistics.median(row["per_round_s"])
                row.update(
                    seconds_per_step=round(seconds, 4),
                    images_per_s=round(batch_size / seconds, 2),
                    cpu_seconds_per_step=round(statistics.median(
                        r["cpu_seconds_per_step"] for r in ok), 4),
                    peak_memory_mb=round(statistics.median(r["peak_memory_mb"] for r in ok), 1),
                    first_step_s=round(statistics.median(r["first_step_s"] for r in ok), 2))
            rows[config["name"]] = row
        ref = rows["reference"].get("seconds_per_step")
        for name, row in rows.items():
            if row["impl"] == "acl-tf" and ref and "seconds_per_step" in row:
                row["over_reference"] = round(row["seconds_per_step"] / ref, 3)
        table[variant] = rows
    ratios = {}
    if "s2s" in table and "ds" in table:
        for name in table["s2s"]:
            s2s, ds = (table[v][name].get("seconds_per_step") for v in ("s2s", "ds"))
            if s2s and ds:
                ratios[name] = round(ds / s2s, 3)
    return {"configurations": table, "ds_over_s2s_time_ratio": ratios}


def render_markdown(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    ref_info = m.get("reference", {})
    tf_info = m.get("acl_tf", {})
    lines = [
        f"Machine: {m.get('cpu')} ({m.get('cores')} cores); reference: PyTorch "
        f"{ref_info.get('torch')} ({ref_info.get('threads')} threads, oneDNN "
        f"{'on' if ref_info.get('mkldnn') else 'off'}); acl-tf: TensorFlow "
        f"{tf_info.get('tensorflow')}, Keras {tf_info.get('keras')} (oneDNN "
        f"{'on' if tf_info.get('onednn') else 'off'}).",
        f"ResNet-18 width {s['width']} + 3-layer projection head, batch {s['batch_size']} "
        f"({2 * s['batch_size']} views), float32 unless stated, LARS, 5-step attack (DS); per "
        f"process: one untimed first step, {s['warmup_steps']} warm-up step(s), median of "
        f"{s['steps']} timed steps; {s['rounds']} round(s), one process per configuration and "
        f"round, nothing in parallel, the order mirrored in odd rounds. Load average before the "
        f"processes: {results.get('load_range')}.",
    ]
    shared = s.get("environment")
    if shared:
        lines.append("Set for every process (both sides): "
                     + " ".join(f"`{k}={v}`" for k, v in shared.items()) + ".")
    lines += [
        "",
        "| variant | configuration | s/step (median of rounds) | per round | images/s | "
        "CPU s/step | peak memory (MB) | acl-tf / reference |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for variant, rows in results["summary"]["configurations"].items():
        for name, row in rows.items():
            if "seconds_per_step" not in row:
                lines.append(f"| {variant} | {name} | failed | | | | | |")
                continue
            settings = " ".join([f"{k}={v}" for k, v in row["env"].items()] + row["flags"])
            label = f"{name} (`{settings}`)" if settings else name
            per_round = ", ".join(f"{t:.3f}" for t in row["per_round_s"])
            ratio = f"{row['over_reference']:.3f}" if "over_reference" in row else ""
            lines.append(f"| {variant} | {label} | {row['seconds_per_step']:.3f} | {per_round} | "
                         f"{row['images_per_s']:.1f} | {row['cpu_seconds_per_step']:.2f} | "
                         f"{row['peak_memory_mb']:.0f} | {ratio} |")
    ratios = results["summary"].get("ds_over_s2s_time_ratio")
    if ratios:
        lines += ["", "DS / S2S time ratio: " + ", ".join(f"{k} {v:.2f}"
                                                          for k, v in ratios.items()) + "."]
    failed = [r for r in results["runs"] if "seconds_per_step" not in r]
    if failed:
        lines += ["", f"{len(failed)} process(es) failed: "
                      + ", ".join(f"round {r['round'] + 1} {r['variant']} {r['config']}"
                                  for r in failed) + "."]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def machine(runs: list) -> dict:
    """The machine as the runs' own JSON describe it (the first run of each side)."""
    out = {}
    for r in runs:
        m = r.get("machine")
        if not m:
            continue
        out.setdefault("cpu", m.get("cpu"))
        out.setdefault("cores", m.get("cores"))
        if r["impl"] == "reference":
            out.setdefault("reference", {k: m.get(k) for k in (
                "torch", "threads", "interop_threads", "mkldnn", "python", "numpy")})
        else:
            out.setdefault("acl_tf", {k: m.get(k) for k in (
                "tensorflow", "keras", "onednn", "python", "platform")})
    return out


def shared_environment(environ=os.environ) -> dict:
    """The :data:`SHARED_ENVIRONMENT` variables set for every process, by name."""
    return {k: v for k, v in sorted(environ.items()) if k.startswith(SHARED_ENVIRONMENT)}


def results_of(args, runs: list, extras, complete: bool) -> dict:
    loads = [r["load_before"] for r in runs if r.get("load_before") is not None]
    return {
        "complete": complete,
        "settings": {"variants": args.variants, "batch_size": args.batch_size, "width": WIDTH,
                     "warmup_steps": args.warmup_steps, "steps": args.steps,
                     "rounds": args.rounds, "extras": extras,
                     "environment": shared_environment()},
        "machine": machine(runs),
        "reference": next((r["reference"] for r in runs if r.get("reference")), None),
        "load_range": [min(loads), max(loads)] if loads else None,
        "summary": summarize(runs, args.variants, extras, args.batch_size),
        "runs": runs,
    }


# -- driver ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acl_repo", required=True, type=Path,
                        help="snapshot of VITA-Group/Adversarial-Contrastive-Learning")
    parser.add_argument("--torch_python", required=True,
                        help="the Python of the PyTorch environment "
                             "(scripts/parity/requirements.txt)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python acl-tf is installed in (default: this one)")
    parser.add_argument("--variants", default="s2s,ds", help="comma-separated: s2s, ds")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--width", type=int, default=WIDTH,
                        help="fixed at 64: the reference's ResNet-18 has no width argument")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", action="append", default=[], metavar="LABEL=SETTINGS",
                        help="an acl-tf configuration more (repeatable), e.g. "
                             "'inter1=--inter_op_threads=1' or "
                             "'onednn_off=TF_ENABLE_ONEDNN_OPTS=0'")
    parser.add_argument("--max_load", type=float, default=0,
                        help="before each process, wait until the 1-minute load average is below "
                             "this (0: do not wait); the load at the start is recorded either way")
    parser.add_argument("--max_wait", type=float, default=600,
                        help="seconds --max_load waits at most before each process")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one process may take")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep every process's JSON here (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "reference_speed.json")
    parser.add_argument("--markdown", type=Path,
                        default=REPO / "benchmarks" / "reference_speed.md")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    if args.width != WIDTH:
        parser.error(f"--width is fixed at {WIDTH}: the reference's ResNet-18 has no width "
                     "argument")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or set(args.variants) - set(VARIANTS):
        parser.error(f"--variants: expected some of {VARIANTS}")
    if args.rounds < 1 or args.steps < 1 or args.warmup_steps < 0 or args.batch_size < 2:
        parser.error("--rounds and --steps must be >= 1, --warmup_steps >= 0, --batch_size >= 2")
    try:
        extras = [parse_extra(spec) for spec in args.extra]
    except ValueError as err:
        parser.error(str(err))
    if len({e["label"] for e in extras}) != len(extras):
        parser.error("--extra labels must differ")
    args.acl_repo = args.acl_repo.resolve()
    if not (args.acl_repo / "train_simCLR.py").is_file():
        parser.error(f"--acl_repo {args.acl_repo} holds no train_simCLR.py")
    plan = schedule(args.variants, extras, args.rounds)
    if args.dry_run:
        for r, variant, config in plan:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in config["env"].items())
            print(f"# round {r + 1} {variant} {config['name']}\n"
                  + (env + " " if env else "")
                  + shlex.join(command(args, variant, config, Path("OUT.json"))))
        return 0

    def log(message):
        print(message, file=sys.stderr, flush=True)

    runs = []
    with tempfile.TemporaryDirectory(prefix="compare_speed_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"{len(plan)} processes, one at a time; load {load_average()}")
        for r, variant, config in plan:
            runs.append(run_one(args, r, variant, config, workdir, log))
            # Partial results after every process: a run cut short keeps what it measured.
            write_atomic(args.output, json.dumps(results_of(args, runs, extras, False),
                                                 indent=2) + "\n")
    results = results_of(args, runs, extras, True)
    write_atomic(args.output, json.dumps(results, indent=2) + "\n")
    table = render_markdown(results)
    write_atomic(args.markdown, table)
    print(table)
    return 1 if any("seconds_per_step" not in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
