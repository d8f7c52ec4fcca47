# The image every component of the Vertex AI / Kubeflow pipeline runs in (python -m
# pipeline.vertex_runner --image=...): TensorFlow's GPU build, Python 3.10 (TFX 1.16 needs < 3.11),
# the pinned dependencies of requirements.txt and this project at /app.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG .             # GPU (default)
#   docker build --build-arg TF_EXTRA= -t REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG-cpu .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG
#   docker run --rm --gpus all REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG     # lists the GPUs
#
# Why this base. TensorFlow 2.16 is built against CUDA 12.3 and cuDNN 8.9 (tf.sysconfig.
# get_build_info(): cuda_version 12.3, cudnn_version 8; kernels for sm_50/60/70/80 and PTX for
# compute_90), and tensorflow[and-cuda]==2.16.2 pins exactly those libraries as pip wheels
# (nvidia-cuda-runtime-cu12 12.3.101, nvidia-cublas-cu12 12.3.4.1, nvidia-cudnn-cu12 8.9.7.29,
# cuFFT, cuRAND, cuSOLVER, cuSPARSE, NCCL, nvJitLink, and ptxas from nvidia-cuda-nvcc-cu12 for
# XLA), which TensorFlow loads from site-packages. So the image takes its CUDA libraries from the
# wheels, one copy at the versions TensorFlow was tested with, and NOT from a
# nvidia/cuda:12.3.x-runtime or -cudnn base: those add a second, unused copy of cuBLAS/cuFFT/...
# (gigabytes) that the dynamic linker may pick instead of the pinned wheels, and NVIDIA's cuDNN
# images for CUDA 12.3 carry cuDNN 9, which TF 2.16 cannot use. The base is the minimal CUDA
# 12.3 image, "base": Ubuntu 22.04 (whose system Python is 3.10) plus only what the wheels lack:
# the NVIDIA container settings (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, the CUDA
# 12.3 driver requirement), the host driver's mount points on PATH / LD_LIBRARY_PATH
# (/usr/local/nvidia on GKE-based workers) and cuda-compat, which lets the CUDA 12.3 libraries run
# on older datacenter drivers. Plain ubuntu:22.04 plus the wheels would work too with those
# settings made by hand; the CUDA tag keeps the CUDA version visible, and
# tests/test_dockerfile.py checks it against the TensorFlow pin of requirements.txt (the last
# RUN below checks it against TensorFlow's own build info). BASE_IMAGE may name a mirror
# (nvcr.io/nvidia/cuda:...), or ubuntu:22.04 for a CPU-only image.
ARG BASE_IMAGE=nvidia/cuda:12.3.2-base-ubuntu22.04
FROM ${BASE_IMAGE}

# The extra of the tensorflow package: "and-cuda" (its CUDA/cuDNN wheels, the GPU image) or empty
# (--build-arg TF_EXTRA=: the CPU-only image, ~3 GB smaller).
ARG TF_EXTRA=and-cuda

# TF_CPP_MIN_LOG_LEVEL=1: TensorFlow's warnings stay in the workers' logs, among them the one that
# says a GPU was found but cannot be used ("Cannot dlopen some GPU libraries").
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app

WORKDIR /app

# Python 3.10 in a virtual environment (its bin/ first on PATH: the `python` that TFX's container
# command runs), then the dependencies (this layer is reused while only the project changes):
# requirements.txt, with tensorflow at its pinned version and the TF_EXTRA extra. A compiler and
# the Python headers are needed for the packages without a binary wheel (pyfarmhash); they are
# removed in the same layer. The symbolic links are TensorFlow's documented fix for a pip install
# whose GPU is not found (tensorflow.org/install/pip, step "Virtual environment configuration"):
# the NVIDIA libraries next to TensorFlow's own, and ptxas on PATH for XLA.
COPY requirements.txt ./
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3.10 python3.10-venv python3.10-dev \
        build-essential; \
    python3.10 -m venv "$VIRTUAL_ENV"; \
    pip install --upgrade pip; \
    tf_version="$(sed -n 's/^tensorflow==\([^ ;]*\).*/\1/p' requirements.txt)"; \
    test -n "$tf_version"; \
    pip install -r requirements.txt "tensorflow${TF_EXTRA:+[$TF_EXTRA]}==${tf_version}"; \
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    if [ -d "$site/nvidia" ]; then \
        (cd "$site/tensorflow" && ln -sf ../nvidia/*/lib/*.so* .); \
        ptxas="$(find "$site/nvidia/cuda_nvcc" -name ptxas -type f -print -quit)"; \
        test -n "$ptxas"; \
        ln -sf "$ptxas" "$VIRTUAL_ENV/bin/ptxas"; \
    fi; \
    apt-get purge -y --auto-remove build-essential python3.10-dev; \
    rm -rf /var/lib/apt/lists/*

# The project (acl_tf with its presets and shipped sample; pipeline/, which the acl-tf wheel does
# not contain and PYTHONPATH=/app makes importable). The check fails the build when the CUDA of
# the base image is not the one TensorFlow was built with; the GPU list is empty at build time
# (no GPU there) and is what `docker run --gpus all IMAGE` prints.
COPY . .
RUN pip install --no-deps -e . \
    && python -c "import os, acl_tf, pipeline.pipeline, tfx.v1, tensorflow as tf; \
built = tf.sysconfig.get_build_info().get('cuda_version'); \
base = os.environ.get('CUDA_VERSION', ''); \
assert not base or base.startswith(built + '.'), \
    f'base image CUDA {base}, TensorFlow built with CUDA {built}'; \
print('acl_tf + TFX ready; TF', tf.__version__, 'CUDA', built, '(base image', base or 'none', \
'); GPUs:', tf.config.list_physical_devices('GPU'))"

CMD ["python", "-c", "import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))"]
