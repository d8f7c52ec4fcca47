"""Compiles the pipeline for Vertex AI Pipelines / Kubeflow Pipelines (KubeflowV2DagRunner).

    python -m pipeline.vertex_runner --config=cifar10 \\
        --image=REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG \\
        --pipeline_root=gs://BUCKET/acl-tf --serving_dir=gs://BUCKET/serving \\
        --set=data.input_base=gs://BUCKET/data/cifar10 --output=pipeline.json

Offline: writes the pipeline spec (JSON) to ``--output`` and submits nothing. Every component
runs in ``--image`` (built from the project's ``Dockerfile``). Relative data paths of the config
are resolved against ``--container_project_root``, where the Dockerfile puts the project: the
``smoke`` config's ``sample:cifar10`` is inside the image; for real data use ``gs://``.
Submit the spec with ``google.cloud.aiplatform.PipelineJob`` or ``kfp.Client`` (see
docs/pipeline.md).

The config's ``resources`` section (:class:`pipeline.config.ResourcesConfig`) sizes the heavy
components' containers: each gets TFX's per-node platform config, a KFP ``ResourceSpec``, which
the V2 compiler writes to ``deploymentSpec.executors.<executor>.container.resources``
(``cpuLimit``, ``memoryLimit`` in GB, ``accelerator: {type, count}``). Vertex AI picks the machine
that fits them; Kubeflow Pipelines 2.x makes them the container's limits (and Kubernetes its
requests).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags, logging

FLAGS = flags.FLAGS

# Vertex / KFP compile only TFX's built-in blessed-model strategy (see baseline_resolver).
BASELINE = "latest"


def resource_spec(resources):
    """A :class:`pipeline.config.ComputeResources` as the KFP IR's container ``ResourceSpec``
    (None when it asks for nothing)."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    if resources.is_empty():
        return None
    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
    if resources.cpu_limit is not None:
        spec.cpu_limit = resources.cpu_limit
    if resources.memory_limit is not None:
        spec.memory_limit = resources.memory_limit_gb
    if resources.accelerators:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = resources.accelerators
    return spec


def apply_resources(pipeline, resources) -> dict:
    """Attaches the ``ResourceSpec`` of each heavy component of ``pipeline`` that ``resources``
    (a :class:`pipeline.config.ResourcesConfig`) sizes, as its TFX platform config; returns
    ``{component id: ResourceSpec}``. For the KubeflowV2DagRunner only: the LocalDagRunner
    rejects platform configs other than Docker's."""
    from pipeline.config import RESOURCE_COMPONENTS

    keys = {component_id: key for key, component_id in RESOURCE_COMPONENTS.items()}
    applied = {}
    for component in pipeline.components:
        key = keys.get(component.id)
        spec = resource_spec(resources.for_component(key)) if key else None
        if spec is None:
            continue
        component.with_platform_config(spec)
        applied[component.id] = spec
        if spec.accelerator.count > 1:
            # The components train on one device (no tf.distribute strategy is passed).
            logging.warning("%s asks for %d accelerators; it runs on one, the others stay idle.",
                            component.id, spec.accelerator.count)
    return applied


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
    apply_resources(pipeline, config.resources)
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
                        "Pipeline preset name (acl_tf/configs/presets/pipeline/) or a "
                        "YAML/JSON path.")
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
