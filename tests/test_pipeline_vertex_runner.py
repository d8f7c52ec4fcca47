"""The pipeline compiled offline for Vertex AI / Kubeflow (KubeflowV2DagRunner): the spec has
every component, the DAG edges, the image, the parameters of the config and the compute resources
(accelerator, CPU, memory) of the heavy components."""

import importlib
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

pytest.importorskip("kfp")
pytest.importorskip("tfx.v1")

from acl_tf.configs import ConfigError, EvaluateConfig, PretrainConfig, SemisupConfig  # noqa: E402
from pipeline import config as pconfig  # noqa: E402
from pipeline.vertex_runner import compile_pipeline  # noqa: E402

IMAGE = "europe-west4-docker.pkg.dev/acl-project/pipelines/acl-tf:1.0"
ROOT = "gs://acl-bucket/pipeline_root"
SERVING = "gs://acl-bucket/serving"
RESOLVER = "latest_blessed_model_resolver"

# task -> the tasks it depends on (the V2 compiler splits the resolver in two tasks: the second
# reads the first's output, see test_every_component_and_edge).
SEMISUP_EDGES = {
    "TrainExampleGen": set(),
    "TestExampleGen": set(),
    "Pretrain": {"TrainExampleGen"},
    "PseudoLabel": {"TrainExampleGen", "Pretrain"},
    "AdversarialTrain": {"TrainExampleGen", "Pretrain", "PseudoLabel"},
    f"{RESOLVER}-model-blessing-resolver": set(),
    f"{RESOLVER}-model-resolver": set(),
    "RobustEvaluator": {"AdversarialTrain", "TestExampleGen", f"{RESOLVER}-model-resolver"},
    "ServingPusher": {"AdversarialTrain", "RobustEvaluator"},
}


def _compile(tmp_path, name, overrides=()):
    path = compile_pipeline(name, list(overrides), IMAGE, str(tmp_path / f"{name}.json"), ROOT,
                            SERVING)
    with open(path) as f:
        return json.load(f)


def _param(task, name):
    value = task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]
    return next(iter(value.values()))


def _edges(spec):
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    return {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}


@pytest.fixture(scope="module")
def smoke_spec(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("vertex"), "smoke")


def test_every_component_and_edge(smoke_spec):
    assert _edges(smoke_spec) == SEMISUP_EDGES
    tasks = smoke_spec["pipelineSpec"]["root"]["dag"]["tasks"]
    inputs = {name: t.get("inputs", {}).get("artifacts", {}) for name, t in tasks.items()}
    producer = {name: {k: a["taskOutputArtifact"]["producerTask"] for k, a in arts.items()
                       if "taskOutputArtifact" in a} for name, arts in inputs.items()}
    assert producer["AdversarialTrain"] == {"examples": "TrainExampleGen",
                                            "pretrained_model": "Pretrain",
                                            "pseudo_labels": "PseudoLabel"}
    assert producer["RobustEvaluator"] == {"model": "AdversarialTrain",
                                           "examples": "TestExampleGen",
                                           "baseline_model": f"{RESOLVER}-model-resolver"}
    assert producer["ServingPusher"] == {"model": "AdversarialTrain",
                                         "model_blessing": "RobustEvaluator"}
    assert producer[f"{RESOLVER}-model-resolver"] == {
        "input": f"{RESOLVER}-model-blessing-resolver"}


def test_every_component_runs_in_the_image_from_an_importable_executor(smoke_spec):
    executors = smoke_spec["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {k: v["container"] for k, v in executors.items() if "container" in v}
    assert len(containers) == 7                  # the two resolver tasks run no container
    for label, container in containers.items():
        assert container["image"] == IMAGE, label
        class_path = container["args"][container["args"].index("--executor_class_path") + 1]
        module, name = class_path.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), class_path


def test_parameters_are_the_resolved_config(smoke_spec):
    config = pconfig.load_pipeline_config("smoke")
    stages = config.resolve()
    tasks = smoke_spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert pconfig.config_from_json(PretrainConfig, _param(tasks["Pretrain"], "config_json")) \
        == stages.pretrain
    for task in ("PseudoLabel", "AdversarialTrain"):
        assert pconfig.config_from_json(SemisupConfig, _param(tasks[task], "config_json")) \
            == stages.semisup
    assert _param(tasks["AdversarialTrain"], "mode") == "semisup"
    evaluator = tasks["RobustEvaluator"]
    assert pconfig.config_from_json(EvaluateConfig, _param(evaluator, "config_json")) \
        == stages.evaluate
    assert _param(evaluator, "metric") == "pgd5"
    assert _param(evaluator, "threshold") == config.blessing.threshold
    assert _param(tasks["ServingPusher"], "serving_dir") == SERVING
    assert _param(tasks["ServingPusher"], "model_name") == "acl_smoke"
    # Relative data paths point into the image (the Dockerfile's WORKDIR).
    assert _param(tasks["TrainExampleGen"], "input_base") == "/app/acl_tf/data/sample/cifar10"
    assert json.loads(_param(tasks["TestExampleGen"], "input_config")) == {
        "splits": [{"name": "test", "pattern": "test.tfrecord"}]}
    assert smoke_spec["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    assert smoke_spec["pipelineSpec"]["pipelineInfo"]["name"] == "acl-tf-smoke"


def test_finetune_pipeline_has_no_pseudo_labels(tmp_path):
    spec = _compile(tmp_path, "cifar10", ["data.input_base=gs://acl-bucket/data/cifar10"])
    edges = _edges(spec)
    expected = {k: v - {"PseudoLabel"} for k, v in SEMISUP_EDGES.items() if k != "PseudoLabel"}
    assert edges == expected
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert _param(tasks["AdversarialTrain"], "mode") == "finetune"
    assert _param(tasks["TrainExampleGen"], "input_base") == "gs://acl-bucket/data/cifar10"
    assert _param(tasks["RobustEvaluator"], "metric") == "pgd20"


def test_bad_config_fails_at_compile_time(tmp_path):
    with pytest.raises(ConfigError, match="blessing.metric 'pgd7'"):
        _compile(tmp_path, "cifar10", ["blessing.metric=pgd7"])
    assert not os.path.exists(tmp_path / "cifar10.json")


def test_command_line(tmp_path):
    output = tmp_path / "spec" / "pipeline.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.vertex_runner", "--config=smoke", f"--image={IMAGE}",
         f"--output={output}", f"--pipeline_root={ROOT}", f"--serving_dir={SERVING}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {output}" in proc.stdout
    assert set(_edges(json.loads(output.read_text()))) == set(SEMISUP_EDGES)


# -- compute resources (the config's `resources` section) -----------------------------------------
HEAVY = {"Pretrain", "PseudoLabel", "AdversarialTrain", "RobustEvaluator"}
A100_ON_ALL_L4_TO_EVALUATE = [
    "resources.accelerator_type=nvidia_tesla_a100", "resources.accelerator_count=2",
    "resources.cpu_limit=12", "resources.memory_limit=85",
    "resources.evaluate.accelerator_type=NVIDIA_L4", "resources.evaluate.accelerator_count=1",
    "resources.evaluate.memory_limit=30Gi", "resources.pseudo_label.accelerator_count=0"]


def _resources(spec):
    """task -> the `resources` of its executor's container ({} when none; None for the resolver
    tasks, which run no container)."""
    pipeline = spec["pipelineSpec"]
    executors = pipeline["deploymentSpec"]["executors"]
    found = {}
    for name, task in pipeline["root"]["dag"]["tasks"].items():
        label = pipeline["components"][task["componentRef"]["name"]]["executorLabel"]
        container = executors[label].get("container")
        found[name] = None if container is None else container.get("resources", {})
    return found


def _accelerator(resources):
    accelerator = resources.get("accelerator")
    # proto3 JSON writes the int64 count as a string.
    return (accelerator["type"], int(accelerator["count"])) if accelerator else None


def test_no_resources_are_requested_by_default(smoke_spec):
    resources = _resources(smoke_spec)
    assert len([r for r in resources.values() if r is not None]) == 7
    assert not any(resources.values())


def test_resources_are_requested_by_exactly_the_heavy_components(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = _compile(tmp_path, "smoke", A100_ON_ALL_L4_TO_EVALUATE)
    resources = _resources(spec)
    assert {name for name, r in resources.items() if r} == HEAVY
    assert {name: _accelerator(resources[name]) for name in HEAVY} == {
        "Pretrain": ("NVIDIA_TESLA_A100", 2), "AdversarialTrain": ("NVIDIA_TESLA_A100", 2),
        "PseudoLabel": None, "RobustEvaluator": ("NVIDIA_L4", 1)}
    for name in HEAVY - {"RobustEvaluator"}:
        assert (resources[name]["cpuLimit"], resources[name]["memoryLimit"]) == (12.0, 85.0)
    assert resources["RobustEvaluator"]["cpuLimit"] == 12.0
    assert resources["RobustEvaluator"]["memoryLimit"] == pytest.approx(30 * 2**30 / 1e9)
    # Every field name is one of kfp's protobuf (deploymentSpec is a Struct inside PipelineSpec:
    # parsed as the PipelineDeploymentConfig it holds, where ParseDict rejects unknown names).
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(spec["pipelineSpec"]["deploymentSpec"], deployment)
    assert deployment.executors["Pretrain_executor"].container.resources.accelerator.count == 2


def test_kubeflow_accelerator_is_the_kubernetes_resource_name():
    from pipeline.vertex_runner import resource_spec

    spec = resource_spec(pconfig.ComputeResources(accelerator_type="nvidia.com/gpu"))
    assert (spec.accelerator.type, spec.accelerator.count) == ("nvidia.com/gpu", 1)
    assert (spec.cpu_limit, spec.memory_limit) == (0, 0)          # unset: not in the JSON
    assert resource_spec(pconfig.ComputeResources(accelerator_type="NVIDIA_L4",
                                                  accelerator_count=0)) is None


@pytest.mark.parametrize("overrides,message", [
    (["resources.accelerator_type=NVIDIA_A100"],
     "resources.accelerator_type 'NVIDIA_A100' is not an accelerator this image can use"),
    (["resources.evaluate.accelerator_type=TPU_V3"],
     "resources.evaluate.accelerator_type 'TPU_V3' is not an accelerator this image can use"),
    (["resources.accelerator_count=1"],
     "resources.accelerator_count is 1 but resources.accelerator_type is not set"),
    (["resources.adversarial_train.accelerator_count=4"],
     "resources.adversarial_train.accelerator_count is 4 but no accelerator_type is set"),
    (["resources.memory_limit=16GB"], "resources.memory_limit must be a number of GB or a size"),
    (["resources.cpu_limit=0"], "resources.cpu_limit must be > 0"),
])
def test_bad_resources_fail_at_compile_time(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _compile(tmp_path, "smoke", overrides)
    assert not os.path.exists(tmp_path / "smoke.json")
