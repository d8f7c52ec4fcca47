"""Throughput benchmark of the ACL pre-training step and of its input pipeline.

For every variant the benchmark builds the real pre-trainer (:func:`build_pretrainer`) and
optimiser (:func:`~acl_tf.optimizers.build_pretrain_optimizer`) from a :class:`~acl_tf.configs.PretrainConfig`, compiles the
training step the way ``model.fit`` does (``model.make_train_function()``: a ``tf.function``
around :meth:`ACLPretrainer.train_step` reading from a ``tf.data`` iterator), feeds it one fixed
batch of random views, and times ``steps`` steps after ``warmup_steps`` (the first call traces and
runs once more). A counter wrapped around ``train_step`` records how often it was traced (once if
nothing retraces). Each variant runs in a fresh process (``spawn``) so that its peak resident
memory is its own.

The input pipeline is timed separately: the JPEG TFRecords are decoded (:func:`acl_tf.data.load`)
and :func:`acl_tf.data.augment.make_pretrain_dataset` draws two augmented views per image, batched
and prefetched as in pre-training. ``pipeline_share_of_step`` says which fraction of a variant's
step time the pipeline would need on the same cores: near or above 1, data loading limits
training.

Results are a JSON-able dict (see :func:`run_benchmark`); :func:`render_markdown` turns it into
the tables of ``benchmarks/README.md``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import platform
import resource
import statistics
import time
from typing import Callable, Optional

from acl_tf.configs import BenchConfig, ConfigError, PretrainConfig, load_config, to_dict
from acl_tf.core.errors import BenchmarkError, NonFiniteLossError
from acl_tf.core.io import write_json_atomic

RESULT_KEYS = ("images_per_s", "views_per_s", "seconds_per_step", "peak_memory_mb")


# -- machine ---------------------------------------------------------------------------------------
def load_average() -> Optional[float]:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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


#: Environment variables TensorFlow reads when it starts that change how a CPU step runs:
#: oneDNN on/off (``TF_ENABLE_ONEDNN_OPTS``), its maths mode (``TF_SET_ONEDNN_FPMATH_MODE=BF16``:
#: float32 convolutions and matmuls computed in bfloat16, on AMX where the CPU has it), its other
#: settings, the thread pools and XLA. They cannot be set once TensorFlow runs, so they are no
#: bench config fields: set them for the whole command; :func:`machine_info` records those set.
RUNTIME_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "TF_SET_ONEDNN_FPMATH_MODE", "TF_ONEDNN_",
                       "TF_MKL_", "ONEDNN_", "DNNL_", "TF_NUM_INTRAOP_THREADS",
                       "TF_NUM_INTEROP_THREADS", "TF_XLA_FLAGS", "XLA_FLAGS", "OMP_NUM_THREADS")


def runtime_environment() -> dict:
    """The :data:`RUNTIME_ENVIRONMENT` variables set in this process, by name."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(RUNTIME_ENVIRONMENT)}


def machine_info() -> dict:
    """CPU, cores, accelerators and library versions of this process's machine, and the
    environment variables that change how TensorFlow runs on it (:func:`runtime_environment`)."""
    import keras
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": onednn,
        "environment": runtime_environment(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10^6 bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak * (1 if platform.system() == "Darwin" else 1024) / 1e6, 1)


def current_rss_mb() -> Optional[float]:
    """Current resident set size in MB (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return None


# -- one variant -----------------------------------------------------------------------------------
def pretrain_config(config: BenchConfig, variant: str, method: str = "acl") -> PretrainConfig:
    """The benchmark's :class:`PretrainConfig` of ``variant`` and ``method`` (base config +
    width/batch)."""
    overrides = [f"variant={variant}", f"method={method}", f"model.width={config.width}",
                 f"batch_size={config.batch_size}", *config.overrides]
    return load_config(PretrainConfig, "pretrain", config.pretrain, overrides)


def entries(config: BenchConfig) -> list:
    """(name, variant, method) of every step the benchmark times: the variants (ACL), then the
    methods on DS, named by the method."""
    return ([(v, v, "acl") for v in config.variants]
            + [(m, "ds", m) for m in config.methods])


def configure_runtime(config: BenchConfig) -> None:
    """Thread pools and precision policy; call before TensorFlow runs anything."""
    import keras
    import tensorflow as tf

    try:
        if config.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.intra_op_threads)
        if config.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(config.inter_op_threads)
    except RuntimeError as err:  # TensorFlow already initialised in this process
        raise BenchmarkError("Thread settings must be applied in a fresh process (isolate=True).") \
            from err
    keras.mixed_precision.set_global_policy(config.precision)


class TraceCounter:
    """Wraps ``model.train_step`` so that every (re)trace of the compiled step is counted.

    The Python body of a ``tf.function`` only runs while tracing, so ``count`` is the number of
    traces of the training step (one when nothing retraces).
    """

    def __init__(self, model):
        self.count = 0
        original = model.train_step

        def counted_train_step(data):
            self.count += 1
            return original(data)

        model.train_step = counted_train_step


def random_views(batch_size: int, image_size: int, seed: int, with_original: bool = False):
    """One batch ``((view1, view2), labels)`` of uniform random images in [0, 1]
    (``((view1, view2, original), labels)`` with ``with_original``, as AIR trains on)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size, 3)
    count = 3 if with_original else 2
    views = tuple(rng.random(shape, dtype=np.float32) for _ in range(count))
    return views, np.zeros([batch_size], np.int64)


def measure_variant(config: BenchConfig, variant: str, method: str = "acl") -> dict:
    """Times the compiled ``train_step`` of one variant (with ``method``) in this process.

    Returns ``seconds_per_step`` (median of ``config.steps`` timed steps), ``images_per_s``
    (source images, i.e. pairs of views, per second), ``views_per_s``, ``step_times``,
    ``cpu_seconds_per_step`` (process CPU time, median),
    ``first_step_s`` (trace + first run), ``traces``, ``peak_memory_mb`` (process peak RSS),
    ``gpu_peak_memory_mb`` on a GPU, the final ``loss`` and the load average around the run.
    The Keras dtype policy is restored afterwards.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    configure_runtime(config)
    try:
        return _measure_variant(config, variant, method)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _measure_variant(config: BenchConfig, variant: str, method: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from acl_tf.optimizers import build_pretrain_optimizer
    from acl_tf.tasks.pretrain import build_pretrainer

    pcfg = pretrain_config(config, variant, method)
    load_before = load_average()
    model = build_pretrainer(pcfg)
    # The schedule only needs a horizon longer than the warm-up; the step count does not matter.
    steps_per_epoch = max(1, 50_000 // pcfg.batch_size)
    model.compile(optimizer=build_pretrain_optimizer(pcfg.optimizer, pcfg.batch_size, steps_per_epoch,
                                            pcfg.epochs),
                  jit_compile=config.jit_compile)
    # As model.fit does before its first step (Keras' _symbolic_build): build the optimiser's
    # variables so that the step function is traced once, not once more to create them.
    model.optimizer.build(model.trainable_variables)
    counter = TraceCounter(model)
    model.make_train_function()
    train_function = model.train_function

    batch = random_views(pcfg.batch_size, pcfg.data.image_size, config.seed, pcfg.uses_air)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    gpus = tf.config.list_physical_devices("GPU")
    rss_model = current_rss_mb()

    def step() -> tuple[float, float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        logs = train_function(iterator)
        loss = float(logs["loss"])  # waits for the step to finish
        if not np.isfinite(loss):
            raise NonFiniteLossError(f"{variant}: non-finite loss {loss} in the benchmark.")
        return time.perf_counter() - start, time.process_time() - cpu_start, loss

    first, _, _ = step()
    for _ in range(config.warmup_steps):
        step()
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    times, cpu_times, loss = [], [], None
    for _ in range(config.steps):
        elapsed, cpu, loss = step()
        times.append(elapsed)
        cpu_times.append(cpu)
    seconds = statistics.median(times)
    result = {
        "variant": variant,
        "method": method,
        "seconds_per_step": round(seconds, 4),
        "images_per_s": round(pcfg.batch_size / seconds, 2),
        "views_per_s": round(2 * pcfg.batch_size / seconds, 2),
        "step_times": [round(t, 4) for t in times],
        # CPU time of all this process's threads: on a loaded machine wall time grows with the
        # other processes' load, CPU time much less (it still includes spin-waiting).
        "cpu_seconds_per_step": round(statistics.median(cpu_times), 4),
        "first_step_s": round(first, 2),
        "traces": counter.count,
        "peak_memory_mb": peak_rss_mb(),
        "rss_after_build_mb": rss_model,
        "loss": round(loss, 4),
        "load_before": load_before,
        "load_after": load_average(),
    }
    if gpus:
        info = tf.config.experimental.get_memory_info("GPU:0")
        result["gpu_peak_memory_mb"] = round(info["peak"] / 1e6, 1)
    return result


# -- the framework's floor -------------------------------------------------------------------------
def plain_resnet18(width: int, image_size: int = 32):
    """A plain Keras CIFAR ResNet-18 (Conv2D / BatchNormalization / ReLU, the topology of
    :func:`acl_tf.models.build_encoder` with one BN): what TensorFlow itself costs per pass."""
    import keras

    def conv(x, filters, kernel, stride):
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                   use_bias=False)(x)

    def bn(x):
        return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.ReLU()(bn(conv(inputs, width, 3, 1)))
    in_filters = width
    for stage, filters in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            out = keras.layers.ReLU()(bn(conv(x, filters, 3, stride)))
            out = bn(conv(out, filters, 3, 1))
            shortcut = x if stride == 1 and in_filters == filters else bn(
                conv(x, filters, 1, stride))
            x = keras.layers.ReLU()(out + shortcut)
            in_filters = filters
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="plain_resnet18")


def measure_floor(config: BenchConfig) -> dict:
    """Times the two passes every ACL step is made of on a plain Keras ResNet-18 (no dual BN,
    projection head, loss or optimiser), on the ``2 * batch_size`` views of one step:

    * ``train_pass_s``: forward in training mode + gradient of every weight;
    * ``attack_pass_s``: forward in inference mode + gradient of the input only (one PGD step).

    From them the least a step can cost in this framework on this machine:
    ``s2s_floor_s`` = one training pass; ``ds_floor_s`` = ``attack.steps`` attack passes + two
    training passes; ``ds_over_s2s_floor_ratio``. Medians of ``config.steps`` calls after
    ``config.warmup_steps`` (+ 1 tracing call).
    """
    import numpy as np
    import tensorflow as tf

    configure_runtime(config)
    pcfg = pretrain_config(config, "ds")
    model = plain_resnet18(config.width, pcfg.data.image_size)
    views, _ = random_views(pcfg.batch_size, pcfg.data.image_size, config.seed)
    x = tf.constant(np.concatenate(views).astype(np.float32))

    @tf.function(jit_compile=config.jit_compile)
    def train_pass():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(model(x, training=True), tf.float32))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function(jit_compile=config.jit_compile)
    def attack_pass():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(model(x, training=False), tf.float32))
        return tape.gradient(loss, x)

    def median_seconds(fn) -> float:
        for _ in range(1 + config.warmup_steps):
            [t.numpy() for t in tf.nest.flatten(fn())]
        times = []
        for _ in range(config.steps):
            start = time.perf_counter()
            [t.numpy() for t in tf.nest.flatten(fn())]  # waits for every result
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    train_s, attack_s = median_seconds(train_pass), median_seconds(attack_pass)
    steps = pcfg.attack.steps
    ds_floor = steps * attack_s + 2 * train_s
    return {"train_pass_s": round(train_s, 4), "attack_pass_s": round(attack_s, 4),
            "attack_steps": steps, "s2s_floor_s": round(train_s, 4),
            "ds_floor_s": round(ds_floor, 4),
            "ds_over_s2s_floor_ratio": round(ds_floor / train_s, 3),
            "views": 2 * pcfg.batch_size, "load_after": load_average()}


# -- input pipeline --------------------------------------------------------------------------------
def measure_input_pipeline(config: BenchConfig) -> dict:
    """Decode + two augmented views per image, in this process.

    ``decode_images_per_s``: TFRecord parsing and JPEG decoding (:func:`acl_tf.data.load`, done
    once per run); ``images_per_s``: :func:`make_pretrain_dataset` (two views per image,
    batched and prefetched, as every epoch does), timed over ``pipeline_images`` images after
    the first batch; ``epoch_start_s``: building an epoch's dataset up to its first batch.
    """
    from acl_tf import data as data_lib
    from acl_tf.data.augment import make_pretrain_dataset

    pcfg = pretrain_config(config, "s2s")
    start = time.perf_counter()
    images = data_lib.load(config.pipeline_source, "train", image_size=pcfg.data.image_size,
                           num_classes=pcfg.data.num_classes, limit=config.pipeline_limit)
    decode_s = time.perf_counter() - start
    if len(images) < pcfg.batch_size:
        raise ConfigError(f"pipeline_source {config.pipeline_source!r} holds {len(images)} "
                          f"images, fewer than one batch of {pcfg.batch_size}.")

    # One epoch's dataset, repeated: the timing is the steady state of an epoch, not the
    # per-epoch start (reported apart: building the dataset, tracing the map, first batch).
    start = time.perf_counter()
    stream = iter(make_pretrain_dataset(images.images, images.labels, batch_size=pcfg.batch_size,
                                        config=pcfg.augment, seed=config.seed,
                                        epoch=0).repeat())
    next(stream)
    epoch_start_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    while count < config.pipeline_images:
        (view1, view2), _ = next(stream)
        count += int(view1.shape[0])
    seconds = time.perf_counter() - start
    return {
        "source": config.pipeline_source,
        "decoded_images": len(images),
        "decode_images_per_s": round(len(images) / decode_s, 1),
        "images": count,
        "images_per_s": round(count / seconds, 1),
        "epoch_start_s": round(epoch_start_s, 2),
        "views_per_s": round(2 * count / seconds, 1),
        "load_after": load_average(),
    }


# -- driver ----------------------------------------------------------------------------------------
class IsolatedCall:
    """``fn(*args)`` started in a fresh ``spawn`` process; :meth:`result` waits for it."""

    def __init__(self, fn: Callable, *args):
        self.name = f"{getattr(fn, '__name__', fn)}{args[1:]}"
        context = multiprocessing.get_context("spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
        self.future = self.pool.submit(fn, *args)

    def result(self):
        try:
            return self.future.result()
        except concurrent.futures.process.BrokenProcessPool as err:
            raise BenchmarkError(f"The benchmark process of {self.name} died (out of memory?).") \
                from err
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def run_isolated(fn: Callable, *args):
    """Runs ``fn(*args)`` in a fresh ``spawn`` process and returns its result."""
    return IsolatedCall(fn, *args).result()


def check_config(config: BenchConfig) -> BenchConfig:
    """Validates the variants against the pre-trainer's list (raises ConfigError)."""
    from acl_tf.trainers.pretrainer import check_variant

    try:
        variants = tuple(check_variant(v) for v in config.variants)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    config = dataclasses.replace(config, variants=variants)
    for _, variant, method in entries(config):   # fails early on a bad base config or override
        pretrain_config(config, variant, method)
    return config


def run_benchmark(config: BenchConfig, isolate: bool = True,
                  log: Callable[[str], None] = lambda message: None) -> dict:
    """Measures every variant (each in its own process if ``isolate``) and the input pipeline.

    Variants run one after the other, or ``config.parallel`` at a time (processes competing for
    the cores: only to check quickly that everything runs, the ``quick`` config does).

    Returns ``{"settings", "machine", "variants": {name: measurement}, "ds_over_s2s_time_ratio",
    "method_over_ds_time_ratio", "floor", "input_pipeline", "pipeline_share_of_step"}`` (the
    ratios only when both steps ran; the methods are named by the method; ``floor``:
    :func:`measure_floor` and each step's time over its floor).
    """
    config = check_config(config)
    results = {"settings": to_dict(config), "machine": machine_info(), "variants": {},
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    results["machine"]["load_at_start"] = load_average()
    todo = entries(config)
    group = config.parallel if isolate else 1
    for first in range(0, len(todo), group):
        batch = todo[first:first + group]
        names = [name for name, _, _ in batch]
        log(f"measuring {', '.join(names)} (batch {config.batch_size}, width {config.width}, "
            f"{config.precision}{', XLA' if config.jit_compile else ''}; load "
            f"{load_average()})")
        if isolate:
            jobs = [IsolatedCall(measure_variant, config, v, m) for _, v, m in batch]
            measured = [job.result() for job in jobs]
        else:
            measured = [measure_variant(config, v, m) for _, v, m in batch]
        for name, m in zip(names, measured):
            results["variants"][name] = m
            log(f"  {name}: {m['seconds_per_step']:.3f} s/step, {m['images_per_s']:.1f} images/s, "
                f"peak {m['peak_memory_mb']:.0f} MB, {m['traces']} trace(s)")
    timed = results["variants"]
    if "s2s" in timed and "ds" in timed:
        results["ds_over_s2s_time_ratio"] = round(
            timed["ds"]["seconds_per_step"] / timed["s2s"]["seconds_per_step"], 3)
    if "ds" in timed and config.methods:
        results["method_over_ds_time_ratio"] = {
            m: round(timed[m]["seconds_per_step"] / timed["ds"]["seconds_per_step"], 3)
            for m in config.methods}
    if config.floor:
        log("measuring the floor: a plain Keras ResNet-18's training and attack passes")
        floor = run_isolated(measure_floor, config) if isolate else measure_floor(config)
        for name, key in (("s2s", "s2s_floor_s"), ("ds", "ds_floor_s")):
            if name in timed:
                floor[f"{name}_over_floor"] = round(timed[name]["seconds_per_step"] / floor[key], 3)
        results["floor"] = floor
    if config.pipeline:
        log(f"measuring the input pipeline ({config.pipeline_source})")
        pipe = measure_input_pipeline(config)  # after the variants: their peaks are unaffected
        results["input_pipeline"] = pipe
        results["pipeline_share_of_step"] = {
            v: round(config.batch_size / pipe["images_per_s"] / m["seconds_per_step"], 3)
            for v, m in timed.items()}
    results["machine"]["load_at_end"] = load_average()
    return results


# -- report ----------------------------------------------------------------------------------------
def render_markdown(results: dict) -> str:
    """The benchmark's tables (variants, ratio, input pipeline) as Markdown."""
    s, m = results["settings"], results["machine"]
    device = ", ".join(m.get("gpus") or []) or f"{m['cpu']} ({m['cores']} cores, no GPU)"
    lines = [
        f"Device: {device}; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"oneDNN {'on' if m.get('onednn') else 'off'}"
        + "".join(f", {k}={v}" for k, v in (m.get("environment") or {}).items()) + ".",
        f"ResNet-18 width {s['width']}, batch {s['batch_size']} ({2 * s['batch_size']} views), "
        f"{s['precision']}{', XLA' if s['jit_compile'] else ''}; median of {s['steps']} steps "
        f"after {s['warmup_steps']} warm-up steps; load average {m.get('load_at_start')} at "
        f"start, {m.get('load_at_end')} at end.",
        "",
        "| variant | s/step | images/s | views/s | CPU s/step | peak memory (MB) | traces |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = [v for v in (*s.get("variants", ()), *s.get("methods", ()))
             if v in results["variants"]]
    order += [v for v in results["variants"] if v not in order]
    for name in order:
        r = results["variants"][name]
        cpu = r.get("cpu_seconds_per_step")
        lines.append(f"| {name} | {r['seconds_per_step']:.3f} | {r['images_per_s']:.1f} | "
                     f"{r['views_per_s']:.1f} | {'-' if cpu is None else f'{cpu:.2f}'} | "
                     f"{r['peak_memory_mb']:.0f} | {r['traces']} |")
    if "ds_over_s2s_time_ratio" in results:
        lines += ["", f"`ds_over_s2s_time_ratio` = {results['ds_over_s2s_time_ratio']:.2f}"]
    if results.get("method_over_ds_time_ratio"):
        ratios = ", ".join(f"{m} {r:.2f}" for m, r in results["method_over_ds_time_ratio"].items())
        lines += ["", f"Methods (on DS) over ACL's DS step: {ratios}."]
    floor = results.get("floor")
    if floor:
        over = ", ".join(f"{v} {floor[f'{v}_over_floor']:.2f}x" for v in ("s2s", "ds")
                         if f"{v}_over_floor" in floor)
        lines += ["", f"Floor (a plain Keras ResNet-18 of the same width on the same "
                      f"{floor['views']} views; no dual BN, head, loss or optimiser): training "
                      f"pass {floor['train_pass_s']:.3f} s, attack pass "
                      f"{floor['attack_pass_s']:.3f} s, so S2S >= {floor['s2s_floor_s']:.3f} s "
                      f"and DS >= {floor['attack_steps']} attack + 2 training passes = "
                      f"{floor['ds_floor_s']:.3f} s (ratio {floor['ds_over_s2s_floor_ratio']:.2f})"
                      + (f"; measured step / floor: {over}" if over else "") + "."]
    pipe = results.get("input_pipeline")
    if pipe:
        share = results.get("pipeline_share_of_step", {})
        shares = ", ".join(f"{v} {share[v]:.2f}" for v in order if v in share)
        lines += ["", f"Input pipeline ({pipe['source']}): decode {pipe['decode_images_per_s']:.0f} "
                      f"images/s (once per run); two augmented views "
                      f"{pipe['images_per_s']:.0f} images/s"
                      + (f" (an epoch's dataset starts in {pipe['epoch_start_s']:.1f} s)"
                         if "epoch_start_s" in pipe else "")
                      + f"; share of a step's time it would need on the same cores: {shares}."]
    return "\n".join(lines) + "\n"


def write_json(results: dict, path) -> None:
    """Writes the results atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic(path, results, indent=2, sort_keys=True)
