#!/usr/bin/env bash
# Creates the project's virtual environment at .venv with Python 3.10 (TFX 1.16 needs < 3.11)
# and installs the pinned dependencies (requirements.txt) and the project itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find_python.sh

PY=$(find_python 3.10 PYTHON "TFX 1.16 needs Python < 3.11")
echo "using $($PY --version) at $(command -v "$PY" || echo "$PY")"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c "import tensorflow as tf, keras, acl_tf; print('TensorFlow', tf.__version__, 'Keras', keras.__version__)"
