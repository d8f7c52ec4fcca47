#!/usr/bin/env bash
# Creates the project's virtual environment at .venv with Python 3.10 (TFX 1.16 needs < 3.11)
# and installs the pinned dependencies (requirements.txt) and the project itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if python3.10 --version >/dev/null 2>&1; then echo python3.10; return; fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10 \
                   /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "error: Python 3.10 not found (TFX 1.16 needs Python < 3.11); set PYTHON=/path/to/python3.10" >&2
  exit 1
}

PY=$(find_python)
echo "using $($PY --version) at $(command -v "$PY" || echo "$PY")"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c "import tensorflow as tf, keras, acl_tf; print('TensorFlow', tf.__version__, 'Keras', keras.__version__)"
