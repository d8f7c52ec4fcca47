"""Times the reference PyTorch ACL pre-training step on the CPU, with the protocol of
``python -m acl_tf.bench``, so that the two can be set side by side
(``scripts/parity/compare_speed.py`` runs both).

The reference (https://github.com/VITA-Group/Adversarial-Contrastive-Learning) is imported from a
snapshot directory, unmodified, by the machinery of ``make_vectors.py``: its own multi-BN
ResNet-18 and 3-layer projection head (``train_simCLR.main``'s model), its LARS optimizer and
cosine scheduler, and one iteration of ``train_simCLR.train`` per step, called with a one-batch
loader:

* ``s2s``: ``--ACL_DS`` off, one BN: one training pass on the 2B views, NT-Xent, backward,
  LARS step;
* ``ds``: ``--ACL_DS``, BNs ``normal`` and ``pgd``: ``PGD_contrastive`` (``--pgd_iter`` 5 steps on
  the ``pgd`` BN in inference mode), then the training passes of the adversarial and the clean
  stream, the mean of their NT-Xent losses, backward, LARS step.

A step is the whole loop iteration of ``train`` (the scheduler step, the passes, backward, the
optimizer step and the ``float(loss)`` that ends it). Input: one batch of ``batch_size`` images
with two views each, uniform random 32x32 in [0, 1], float32, repeated. As in acl_tf.bench: the
first step is timed apart (``first_step_s``), ``warmup_steps`` untimed steps follow, then
``steps`` timed steps give the median (``seconds_per_step``); ``cpu_seconds_per_step`` is the
median process CPU time; ``peak_memory_mb`` the process's peak resident set size (of all the
variants run so far in this process: run one variant per process, as compare_speed.py does, for
a variant's own peak).

Environment: the PyTorch one of ``scripts/parity/requirements.txt`` (see ``make_vectors.py``)::

    "$PARITY_VENV"/bin/python scripts/parity/bench_reference.py --acl_repo=SNAPSHOT_OF_ACL \\
        --variants=s2s,ds --batch_size=64 --output=/tmp/reference_bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_vectors as mv  # noqa: E402  (the reference's import machinery)

VARIANTS = ("s2s", "ds")
#: The ``train`` loader's length the scheduler's horizon is computed from: CIFAR-10's 50,000
#: training images (as acl_tf.bench does; the step count does not change the step's cost).
TRAIN_IMAGES = 50_000


# -- machine ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10^6 bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak * (1 if platform.system() == "Darwin" else 1024) / 1e6, 1)


def current_rss_mb():
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return None


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "numpy": np.__version__,
    }


def snapshot_info(acl_repo: Path) -> dict:
    """Which reference code ran: the snapshot's directory name and a digest of the files timed."""
    digest = hashlib.sha256()
    for name in ("train_simCLR.py", "utils.py", "models/resnet_multi_bn.py", "optimizer/lars.py"):
        digest.update(name.encode() + b"\0" + (acl_repo / name).read_bytes())
    return {"snapshot": acl_repo.name, "sha256": digest.hexdigest()}


# -- one variant -----------------------------------------------------------------------------------
def make_step(ref: mv.Reference, variant: str, batch_size: int, seed: int):
    """The reference's model, LARS, scheduler and a function running one ``train`` iteration on a
    fixed batch (returns its loss)."""
    torch.manual_seed(seed)
    bn_names = ["normal", "pgd"] if variant == "ds" else ["normal"]
    model = ref.pretrain_model(bn_names)
    args = argparse.Namespace(**vars(ref.simclr_args))
    args.ACL_DS = variant == "ds"
    # train_simCLR.main, with the script's defaults (lr 5.0, LARS weight decay 1e-6, cosine
    # schedule with 10 warm-up epochs) and a loader of TRAIN_IMAGES / batch_size batches.
    steps_per_epoch = max(1, TRAIN_IMAGES // batch_size)
    optimizer = ref.lars.LARS(model.parameters(), lr=args.lr, weight_decay=1e-6)
    cosine = ref.simclr["cosine_annealing"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda step: cosine(step, args.epochs * steps_per_epoch, 1,
                                                 1e-6 / args.lr,
                                                 warmup_steps=10 * steps_per_epoch))
    rng = np.random.default_rng(seed)
    views = torch.from_numpy(rng.random((batch_size, 2, 3, 32, 32), dtype=np.float32))
    loader = mv._Loader([views], batch_size)   # [B, 2, C, H, W]: train() interleaves the views
    train = ref.simclr["train"]

    def step() -> float:
        ref.simclr["args"] = args                # train() reads the script's global args
        return train(loader, model, optimizer, scheduler, 1, mv._Log(), 10)

    return step


def measure(ref: mv.Reference, variant: str, batch_size: int, warmup_steps: int, steps: int,
            seed: int = 0) -> dict:
    """Times ``variant``'s step in this process (see the module docstring)."""
    load_before = load_average()
    step = make_step(ref, variant, batch_size, seed)
    rss_model = current_rss_mb()

    def timed():
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = float(step())
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if not np.isfinite(loss):
            raise SystemExit(f"{variant}: non-finite loss {loss} in the benchmark")
        return elapsed, cpu, loss

    with mv.on_cpu():
        first, _, _ = timed()
        for _ in range(warmup_steps):
            timed()
        times, cpu_times, loss = [], [], None
        for _ in range(steps):
            elapsed, cpu, loss = timed()
            times.append(elapsed)
            cpu_times.append(cpu)
    seconds = statistics.median(times)
    return {
        "variant": variant,
        "seconds_per_step": round(seconds, 4),
        "images_per_s": round(batch_size / seconds, 2),
        "views_per_s": round(2 * batch_size / seconds, 2),
        "step_times": [round(t, 4) for t in times],
        "cpu_seconds_per_step": round(statistics.median(cpu_times), 4),
        "first_step_s": round(first, 2),
        "peak_memory_mb": peak_rss_mb(),
        "rss_after_build_mb": rss_model,
        "loss": round(loss, 4),
        "load_before": load_before,
        "load_after": load_average(),
    }


# -- driver ----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acl_repo", required=True, type=Path,
                        help="snapshot of VITA-Group/Adversarial-Contrastive-Learning")
    parser.add_argument("--variants", default="s2s,ds",
                        help="comma-separated, of " + ", ".join(VARIANTS))
    parser.add_argument("--batch_size", type=int, default=64, help="images per step (2 views each)")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is kept)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--interop_threads", type=int, default=0,
                        help="torch inter-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; expected some of {VARIANTS}")
    if args.batch_size < 2 or args.steps < 1 or args.warmup_steps < 0:
        parser.error("--batch_size must be >= 2, --steps >= 1, --warmup_steps >= 0")
    if args.interop_threads:
        torch.set_num_interop_threads(args.interop_threads)   # before any parallel work
    if args.threads:
        torch.set_num_threads(args.threads)
    acl_repo = args.acl_repo.resolve()
    ref = mv.Reference(acl_repo, None)
    results = {"implementation": "reference", "reference": snapshot_info(acl_repo),
               "settings": {"variants": variants, "batch_size": args.batch_size, "width": 64,
                            "precision": "float32", "warmup_steps": args.warmup_steps,
                            "steps": args.steps, "seed": args.seed,
                            "pgd_iter": ref.simclr_args.pgd_iter},
               "machine": machine_info(), "variants": {},
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    results["machine"]["load_at_start"] = load_average()
    for variant in variants:
        print(f"measuring the reference's {variant} (batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads; load {load_average()})", file=sys.stderr,
              flush=True)
        r = measure(ref, variant, args.batch_size, args.warmup_steps, args.steps, args.seed)
        results["variants"][variant] = r
        print(f"  {variant}: {r['seconds_per_step']:.3f} s/step, {r['images_per_s']:.1f} "
              f"images/s, peak {r['peak_memory_mb']:.0f} MB (first step {r['first_step_s']} s)",
              flush=True)
    results["machine"]["load_at_end"] = load_average()
    text = json.dumps(results, indent=2, sort_keys=True)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.output)
        print(f"wrote {args.output}", flush=True)
    else:
        print(text)
    return results


if __name__ == "__main__":
    main()
