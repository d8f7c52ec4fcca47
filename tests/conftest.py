"""Shared test fixtures: project paths and quiet TensorFlow logs."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF 2.16's oneDNN kernels can corrupt memory computing the eager input gradient of a 1x1
# stride-2 convolution with fewer than 16 input channels (the shortcut of the width-4/8 test
# ResNets); the plain Eigen kernels are correct. Subprocesses started by tests inherit this.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = PROJECT_ROOT / "acl_tf" / "data" / "sample" / "cifar10"
# The real CIFAR-10 TFRecords (train.tfrecord, test.tfrecord), when the machine has them: passed
# explicitly (.ci/run sets it); tests that need them skip without.
CIFAR10_DIR = Path(os.environ["ACL_TF_TEST_CIFAR10"]) if os.environ.get("ACL_TF_TEST_CIFAR10") \
    else None


@pytest.fixture
def project_root():
    return PROJECT_ROOT


@pytest.fixture
def sample_dir():
    return SAMPLE_DIR


@pytest.fixture
def restore_policy():
    """Puts the Keras global dtype policy back after a test that changes it."""
    import keras

    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


# -- the pipeline components' tiny artifacts, built once per session (tests/pipeline_helpers.py) --
@pytest.fixture(scope="session")
def components_work(tmp_path_factory):
    """Train / test Examples artifacts (dict: root, train, test, test_data)."""
    pytest.importorskip("tfx.v1")
    import pipeline_helpers

    return pipeline_helpers.build_work(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="session")
def components_encoder(components_work):
    """The Pretrain component's encoder artifact."""
    import pipeline_helpers

    return pipeline_helpers.build_encoder(components_work)


@pytest.fixture(scope="session")
def components_finetuned(components_work, components_encoder):
    """AdversarialTrain's fine-tuned classifier artifact."""
    import pipeline_helpers

    return pipeline_helpers.build_finetuned(components_work, components_encoder)


@pytest.fixture(scope="session")
def components_student(components_work, components_encoder):
    """PseudoLabel's pseudo-labels and AdversarialTrain's semi-supervised student artifacts."""
    import pipeline_helpers

    return pipeline_helpers.build_student(components_work, components_encoder)


def pytest_collection_modifyitems(config, items):
    """The files that hold slow tests run first (each file keeps its own order). With the suite
    split over processes by file (``-n 2 --dist loadfile``, as CI runs it), the longest files
    then start early, instead of one of them running last while the other process waits."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort
