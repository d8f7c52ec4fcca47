"""Throughput benchmark of the pre-training steps (see :mod:`acl_tf.tasks.bench`) into a report
(``--output``).

    acl-tf bench --variants=s2s,a2a,a2s,ds --batch_size=64 --width=64 \\
        --output=benchmarks/results_cpu.json --markdown=benchmarks/results_cpu.md
    acl-tf bench --quick --output=/tmp/bench.json          # < 1 min on 2 CPU cores
                                          # (rough figures: 2 variants at a time)
    acl-tf bench --variants=ds --methods=dynacl,dynacl_air     # ACL's successors beside DS
    acl-tf bench --from_json=benchmarks/results_cpu.json --markdown=-   # re-render

(``python -m acl_tf.bench`` runs the same.) ``--config`` is a preset name (see
``acl_tf/configs/presets/bench/``; default ``cpu_resnet18``, ``--quick`` is ``--config=quick``)
or a YAML/JSON path; the flags below override its fields when given. Every variant runs in a
fresh process; the JSON holds the settings, the machine, per-variant figures,
``ds_over_s2s_time_ratio`` and the input pipeline's figures.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from acl_tf.cli.common import config_help, define_enum, define_enum_list, run

FLAGS = flags.FLAGS


def define_flags():
    from acl_tf.configs import BENCH_PRECISIONS, METHODS, VARIANTS

    flags.DEFINE_string("config", None, config_help("bench") + " Default: cpu_resnet18, or "
                        "quick with --quick.")
    flags.DEFINE_bool("quick", False, "Tiny model and few steps: checks the benchmark runs.")
    define_enum_list("variants", None, VARIANTS, "Variants to time, e.g. s2s,a2a,a2s,ds.")
    define_enum_list("methods", None, [m for m in METHODS if m != "acl"],
                     "ACL's successors to time on the DS variant, e.g. dynacl,dynacl_air.")
    flags.DEFINE_integer("batch_size", None, "Source images per step (2 views each).")
    flags.DEFINE_integer("width", None, "ResNet-18 first-stage width.")
    define_enum("precision", None, BENCH_PRECISIONS, "Keras dtype policy.")
    flags.DEFINE_bool("jit_compile", None, "Compile the step with XLA.")
    flags.DEFINE_integer("steps", None, "Timed steps (the median is reported).")
    flags.DEFINE_integer("warmup_steps", None, "Untimed steps after the first (tracing) call.")
    flags.DEFINE_bool("floor", None, "Also time a plain Keras ResNet-18's training and attack "
                      "passes (the least a step can cost).")
    flags.DEFINE_bool("pipeline", None, "Also time the input pipeline.")
    flags.DEFINE_string("pipeline_source", None, "TFRecords of the input-pipeline timing.")
    flags.DEFINE_integer("pipeline_limit", None, "Decode only the first N images.")
    flags.DEFINE_integer("intra_op_threads", None, "TensorFlow intra-op threads (0: default).")
    flags.DEFINE_integer("inter_op_threads", None, "TensorFlow inter-op threads (0: default).")
    flags.DEFINE_integer("parallel", None, "Variants measured at once (>1 only to check "
                         "quickly that everything runs: the processes compete for the cores).")
    flags.DEFINE_multi_string("set", [], "Bench config override field=value (repeatable).")
    flags.DEFINE_string("output", None, "The report this command writes: the results as JSON.")
    flags.DEFINE_string("markdown", None, "Write the Markdown tables here ('-': stdout).")
    flags.DEFINE_string("from_json", None, "Render an earlier --output instead of measuring.")

_FIELDS = ("variants", "methods", "batch_size", "width", "precision", "jit_compile", "steps",
           "warmup_steps",
           "floor", "pipeline", "pipeline_source", "pipeline_limit", "intra_op_threads",
           "inter_op_threads", "parallel")


def flag_overrides() -> list:
    """``field=value`` overrides of the flags that were given."""
    overrides = []
    for name in _FIELDS:
        value = getattr(FLAGS, name)
        if value is None:
            continue
        if isinstance(value, list):
            value = "[" + ",".join(value) + "]"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        overrides.append(f"{name}={value}")
    return overrides + list(FLAGS.set)


def main(argv):
    del argv
    from acl_tf.configs import BenchConfig, ConfigError, load_config
    from acl_tf.tasks import bench as benchmark

    if FLAGS.from_json:
        try:
            with open(FLAGS.from_json) as f:
                results = json.load(f)
        except (OSError, ValueError) as err:
            raise ConfigError(f"Cannot read --from_json={FLAGS.from_json}: {err}") from err
    else:
        name = FLAGS.config or ("quick" if FLAGS.quick else "cpu_resnet18")
        config = load_config(BenchConfig, "bench", name, flag_overrides())
        results = benchmark.run_benchmark(
            config, log=lambda message: print(message, file=sys.stderr, flush=True))
    if FLAGS.output:
        benchmark.write_json(results, FLAGS.output)
    table = benchmark.render_markdown(results)
    if FLAGS.markdown == "-" or not (FLAGS.markdown or FLAGS.output):
        print(table)
    elif FLAGS.markdown:
        with open(FLAGS.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    run(define_flags, main)
