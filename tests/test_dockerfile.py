"""The pipeline image's Dockerfile agrees with the pins: its CUDA base image is the CUDA that the
pinned TensorFlow was built against, and its build reads TensorFlow's version from
requirements.txt. (The image itself is not built here: no Docker engine.)"""

import importlib.metadata
import re
import shutil
import subprocess

import pytest
from conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"

# TensorFlow minor version -> the CUDA (major.minor) of its tested GPU build
# (tensorflow.org/install/source#gpu, "Tested build configurations").
TF_CUDA = {"2.14": "11.8", "2.15": "12.2", "2.16": "12.3", "2.17": "12.3", "2.18": "12.5"}


def _tf_pin() -> str:
    pins = re.findall(r"^tensorflow==([^\s;#]+)", REQUIREMENTS.read_text(), re.MULTILINE)
    assert len(pins) == 1, pins
    return pins[0]


def _base_cuda() -> str:
    match = re.search(r"^ARG BASE_IMAGE=\S*nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-\S*ubuntu22\.04\s*$",
                      DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the default BASE_IMAGE is no nvidia/cuda:X.Y.Z-...-ubuntu22.04 image"
    return f"{match.group(1)}.{match.group(2)}"


def test_base_image_cuda_is_the_cuda_of_the_pinned_tensorflow():
    pin = _tf_pin()
    minor = ".".join(pin.split(".")[:2])
    assert minor in TF_CUDA, f"add TensorFlow {minor}'s CUDA version to TF_CUDA"
    assert _base_cuda() == TF_CUDA[minor]


def test_base_image_cuda_is_the_cuda_of_the_and_cuda_wheels():
    """The CUDA runtime wheel that tensorflow[and-cuda] pins (from the installed package's
    metadata, when it is the pinned version) has the base image's CUDA version."""
    pin = _tf_pin()
    try:
        installed = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorflow is not installed")
    if installed != pin:
        pytest.skip(f"tensorflow {installed} installed, {pin} pinned")
    runtime = [r for r in importlib.metadata.requires("tensorflow")
               if r.startswith("nvidia-cuda-runtime-cu") and "and-cuda" in r]
    assert len(runtime) == 1, runtime
    version = re.search(r"==\s*(\d+)\.(\d+)", runtime[0])
    assert f"{version.group(1)}.{version.group(2)}" == _base_cuda(), runtime[0]


@pytest.mark.skipif(shutil.which("sed") is None, reason="no sed")
def test_build_installs_the_pinned_tensorflow():
    """The sed expression of the Dockerfile's RUN extracts the pin of requirements.txt."""
    match = re.search(r"tf_version=\"\$\(sed -n '([^']+)' requirements\.txt\)\"",
                      DOCKERFILE.read_text())
    assert match, "the Dockerfile no longer reads tensorflow's version from requirements.txt"
    out = subprocess.run(["sed", "-n", match.group(1), str(REQUIREMENTS)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == _tf_pin()
