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
SAMPLE_DIR = PROJECT_ROOT / "data" / "cifar10_sample"
SHARED_CIFAR10 = (PROJECT_ROOT / ".." / "shared" / "data" / "cifar10").resolve()


@pytest.fixture
def project_root():
    return PROJECT_ROOT


@pytest.fixture
def sample_dir():
    return SAMPLE_DIR
