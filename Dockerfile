# The image every component of the Vertex AI / Kubeflow pipeline runs in (python -m
# pipeline.vertex_runner --image=...): Python 3.10 (TFX 1.16 needs < 3.11), the pinned
# dependencies of requirements.txt and this project, installed at /app.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/acl-tf:TAG
FROM python:3.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# Dependencies first (their layer is reused while only the project's code changes). A compiler is
# needed for the packages without a binary wheel (pyfarmhash); it is removed in the same layer.
COPY requirements.txt ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && pip install --upgrade pip \
    && pip install -r requirements.txt \
    && apt-get purge -y --auto-remove build-essential \
    && rm -rf /var/lib/apt/lists/*

# The project (acl_tf, pipeline, configs, the shipped sample), importable from anywhere.
COPY . .
RUN pip install --no-deps -e . \
    && python -c "import acl_tf, pipeline.pipeline, tfx.v1; print('acl_tf + TFX ready')"
