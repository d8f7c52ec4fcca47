#!/usr/bin/env bash
# The library on the newest TensorFlow: creates .venv-latest with Python 3.12, installs the project
# as a user does (non-editable `pip install ".[test,attacks]"`, no TFX) with the exact versions of
# requirements-latest.txt, checks that the install matches that lock file, then runs the fast tests
# (not marked slow) from the repository root, in two processes. The tests of the TFX pipeline skip
# (no TFX there); the pipeline is tested on TF 2.16 / Python 3.10 in .venv (scripts/setup.sh).
#   bash scripts/test_latest_tf.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find_python.sh

is_312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }

PY=$(find_python 3.12 PYTHON312)
is_312 "$PY" || { echo "error: $PY is not Python 3.12" >&2; exit 1; }
echo "using $("$PY" --version) at $(command -v "$PY" || echo "$PY")"

start=$SECONDS
# A venv made with another Python or another lock file is made afresh (no leftovers of old pins).
if [ -x .venv-latest/bin/python ] && { ! is_312 .venv-latest/bin/python \
     || ! cmp -s requirements-latest.txt .venv-latest/requirements-latest.txt; }; then
  echo "re-creating .venv-latest (another Python or requirements-latest.txt changed)"
  rm -rf .venv-latest
fi
[ -x .venv-latest/bin/python ] || "$PY" -m venv .venv-latest
.venv-latest/bin/python -m pip install --quiet --upgrade pip

# Build from a clean copy of the working tree (tracked and not-ignored files): an in-tree
# setuptools build leaves build/ behind, whose stale files would go into later wheels.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$src"
# (pip rebuilds and reinstalls a project given as a folder even when its version is unchanged.)
.venv-latest/bin/python -m pip install --quiet -c requirements-latest.txt "$src[test,attacks]"

# The install must be exactly the lock file: a pin missing (e.g. a dependency pyproject.toml
# lost) or a package the lock does not name means the tested set changed.
.venv-latest/bin/python - requirements-latest.txt <<'EOF'
import re
import sys
from importlib import metadata


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


pinned = {}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, version = line.partition("==")
        pinned[norm(name)] = version
installed = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
installed.pop("acl-tf", None)
installed.pop("pip", None)
problems = []
for name, version in sorted(pinned.items()):
    if name not in installed:
        problems.append(f"{name}=={version} is pinned but not installed")
    elif installed[name] != version:
        problems.append(f"{name}=={version} is pinned but {installed[name]} is installed")
problems += [f"{name}=={version} is installed but not pinned"
             for name, version in sorted(installed.items()) if name not in pinned]
if problems:
    sys.exit("error: .venv-latest differs from requirements-latest.txt: a pin not installed is a "
             "dependency pyproject.toml no longer brings in; an unpinned package, a new one. "
             "Fix pyproject.toml or regenerate the lock file (see its header); leftovers of "
             "packages installed by hand go with rm -r .venv-latest:\n  "
             + "\n  ".join(problems))
EOF
cp requirements-latest.txt .venv-latest/requirements-latest.txt
# (TensorFlow 2.20+ logs its load-time INFO lines whatever TF_CPP_MIN_LOG_LEVEL says: shown on error.)
.venv-latest/bin/python -c "import tensorflow as tf, keras, numpy, sys, acl_tf
print('Python', sys.version.split()[0], 'TensorFlow', tf.__version__, 'Keras', keras.__version__,
      'NumPy', numpy.__version__)" 2>"$src/import.log" || { cat "$src/import.log" >&2; exit 1; }
echo "install: $((SECONDS - start)) s"

start=$SECONDS
status=0
.venv-latest/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow" -p no:cacheprovider "$@" || status=$?
echo "fast tests on the newest TensorFlow: $((SECONDS - start)) s"
exit $status
