"""Runs the pipeline on this machine: LocalDagRunner, Beam's DirectRunner, SQLite ML Metadata.

    python -m pipeline.local_runner --config=smoke --pipeline_root=/tmp/acl_pipeline
    python -m pipeline.local_runner --config=cifar10 --pipeline_root=runs/pipeline \\
        --set=blessing.threshold=0.4

Under ``--pipeline_root`` (DIR): the artifacts (``DIR/<component id>/<output>/<execution id>/``),
the ML Metadata store ``DIR/metadata.sqlite`` and, unless ``--serving_dir`` says otherwise,
the pushed models ``DIR/serving/<serving_model_name>/<version>/``. Running again with nothing
changed takes every component from the cache; after a failure, fix the cause and run the same
command again: the components that had finished are not run again.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
METADATA_FILE = "metadata.sqlite"


def beam_args(num_workers: int, running_mode: str) -> list[str]:
    return [f"--direct_num_workers={num_workers}", f"--direct_running_mode={running_mode}"]


def build(config_name, overrides, pipeline_root, serving_dir=None, enable_cache=True,
          baseline="previous", direct_num_workers=1, direct_running_mode="in_memory"):
    """The local pipeline (config + SQLite metadata under ``pipeline_root``)."""
    from tfx import v1 as tfx

    from pipeline.config import load_pipeline_config
    from pipeline.pipeline import create_pipeline

    pipeline_root = os.path.abspath(pipeline_root)
    config = load_pipeline_config(config_name, overrides)
    return create_pipeline(
        config, pipeline_root=pipeline_root,
        serving_dir=os.path.abspath(serving_dir or os.path.join(pipeline_root, "serving")),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(pipeline_root, METADATA_FILE)),
        beam_pipeline_args=beam_args(direct_num_workers, direct_running_mode),
        enable_cache=enable_cache, baseline=baseline)


def run(pipeline) -> None:
    """Runs ``pipeline`` with LocalDagRunner."""
    from tfx import v1 as tfx

    tfx.orchestration.LocalDagRunner().run(pipeline)


def failed_components(pipeline_root) -> list[str]:
    """The components whose execution failed in the latest run recorded under ``pipeline_root``."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    path = os.path.join(os.path.abspath(pipeline_root), METADATA_FILE)
    if not os.path.exists(path):
        return []
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = mlmd.MetadataStore(config)
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return []
    latest = max(runs, key=lambda c: c.id)
    failed = []
    for execution in store.get_executions_by_context(latest.id):
        if execution.last_known_state == metadata_store_pb2.Execution.FAILED:
            failed += [c.name.split(".", 1)[-1]
                       for c in store.get_contexts_by_execution(execution.id)
                       if c.type_id == store.get_context_type("node").id]
    return failed


def main(argv):
    del argv
    from acl_tf.configs import ConfigError

    try:
        pipeline = build(FLAGS.config, FLAGS.set, FLAGS.pipeline_root, FLAGS.serving_dir,
                         FLAGS.enable_cache, FLAGS.baseline, FLAGS.direct_num_workers,
                         FLAGS.direct_running_mode)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    start = time.monotonic()
    try:
        run(pipeline)
    except Exception as err:  # noqa: BLE001 - any component failure ends the run here.
        logging.exception("pipeline run failed")
        failed = failed_components(FLAGS.pipeline_root)
        where = f" in {', '.join(failed)}" if failed else ""
        print(f"error: the pipeline stopped{where}: {type(err).__name__}: {err}\n"
              f"The artifacts of the components that finished are kept under "
              f"{os.path.abspath(FLAGS.pipeline_root)}; fix the cause and run the same command "
              "again: finished components come from the cache.", file=sys.stderr)
        sys.exit(1)
    print(f"pipeline {pipeline.pipeline_info.pipeline_name} finished in "
          f"{time.monotonic() - start:.1f} s")


def define_flags() -> None:
    """The command line's flags (defined only when this module is the program, so that tests
    and other programs can import :func:`build` and :func:`run` without flag clashes)."""
    flags.DEFINE_string("config", "smoke",
                        "Pipeline preset name (acl_tf/configs/presets/pipeline/) or a "
                        "YAML/JSON path.")
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable), e.g. "
                              "--set=blessing.threshold=0.4 or "
                              "--set='pretrain.overrides=[epochs=2]'.")
    flags.DEFINE_string("pipeline_root", None,
                        "Directory of the artifacts and the metadata store.")
    flags.DEFINE_string("serving_dir", None, "Serving root (default: PIPELINE_ROOT/serving).")
    flags.DEFINE_bool("enable_cache", True, "Reuse the outputs of unchanged components.")
    flags.DEFINE_enum("baseline", "previous", ["previous", "latest", "none"],
                      "Which blessed model a new model must beat (see docs/pipeline.md).")
    flags.DEFINE_integer("direct_num_workers", 1, "Beam DirectRunner workers (0: one per core).")
    flags.DEFINE_enum("direct_running_mode", "in_memory",
                      ["in_memory", "multi_threading", "multi_processing"],
                      "Beam DirectRunner mode of the example gens.")
    flags.mark_flag_as_required("pipeline_root")


if __name__ == "__main__":
    define_flags()
    app.run(main)
