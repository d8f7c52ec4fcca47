"""Compiles the pipeline for Vertex AI Pipelines / Kubeflow Pipelines (KubeflowV2DagRunner).

    python -m pipeline.vertex_runner --config=cifar10 \\
        --image=REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG \\
        --pipeline_root=gs://BUCKET/acl-tf --serving_dir=gs://BUCKET/serving \\
        --set=data.input_base=gs://BUCKET/data/cifar10 --output=pipeline.json

Offline: writes the pipeline spec (JSON) to ``--output`` and submits nothing. Every component
runs in ``--image`` (built from the project's ``Dockerfile``). Relative data paths of the config
are resolved against ``--container_project_root``, where the Dockerfile puts the project: the
``smoke`` config's ``data/cifar10_sample`` is inside the image; for real data use ``gs://``.
Submit the spec with ``google.cloud.aiplatform.PipelineJob`` or ``kfp.Client`` (see
docs/pipeline.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS

# Vertex / KFP compile only TFX's built-in blessed-model strategy (see baseline_resolver).
BASELINE = "latest"


def compile_pipeline(config_name, overrides, image, output, pipeline_root, serving_dir,
                     container_project_root="/app", enable_cache=True) -> str:
    """Writes the KubeflowV2DagRunner spec of the pipeline to ``output``; returns its path."""
    from tfx import v1 as tfx

    from pipeline.config import load_pipeline_config
    from pipeline.pipeline import create_pipeline

    config = load_pipeline_config(config_name, overrides)
    pipeline = create_pipeline(config, pipeline_root=pipeline_root, serving_dir=serving_dir,
                               project_root=Path(container_project_root),
                               enable_cache=enable_cache, baseline=BASELINE)
    output = os.path.abspath(output)
    directory, filename = os.path.split(output)
    os.makedirs(directory, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=directory, output_filename=filename)
    runner.run(pipeline, write_out=True)
    return output


def main(argv):
    del argv
    from acl_tf.configs import ConfigError

    try:
        path = compile_pipeline(FLAGS.config, FLAGS.set, FLAGS.image, FLAGS.output,
                                FLAGS.pipeline_root, FLAGS.serving_dir,
                                FLAGS.container_project_root, FLAGS.enable_cache)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


def define_flags() -> None:
    """The command line's flags (defined only when this module is the program)."""
    flags.DEFINE_string("config", "cifar10",
                        "Pipeline config name under configs/pipeline/ or a path.")
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable).")
    flags.DEFINE_string("image", None, "Container image every component runs in.")
    flags.DEFINE_string("output", "pipeline.json", "Where to write the compiled pipeline spec.")
    flags.DEFINE_string("pipeline_root", "gs://YOUR_BUCKET/acl-tf/pipeline_root",
                        "Artifact root of the runs (gs:// on Vertex AI).")
    flags.DEFINE_string("serving_dir", "gs://YOUR_BUCKET/acl-tf/serving",
                        "Serving root the pusher writes NAME/VERSION/ into.")
    flags.DEFINE_string("container_project_root", "/app",
                        "Where the image holds the project (relative data paths resolve there).")
    flags.DEFINE_bool("enable_cache", True,
                      "Let Vertex reuse the outputs of unchanged components.")
    flags.mark_flag_as_required("image")


if __name__ == "__main__":
    define_flags()
    app.run(main)
