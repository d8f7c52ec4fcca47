# Sourced by setup.sh and test_latest_tf.sh: find_python VERSION OVERRIDE [WHY] prints a Python
# VERSION interpreter: the value of the variable named OVERRIDE if set, else pythonVERSION on
# PATH, a pyenv version, /usr/bin or /usr/local/bin; exits with an error naming WHY otherwise.
find_python() {
  local version=$1 override=$2 why=${3:-}
  if [ -n "${!override:-}" ]; then echo "${!override}"; return; fi
  if "python$version" --version >/dev/null 2>&1; then echo "python$version"; return; fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version" \
                   "/usr/bin/python$version" "/usr/local/bin/python$version"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "error: Python $version not found${why:+ ($why)}; set $override=/path/to/python$version" >&2
  exit 1
}
