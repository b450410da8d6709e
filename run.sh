#!/usr/bin/env bash
# The workbench's two entry points. Each creates (or reuses) the virtual environment .venv.
#   bash run.sh demo [vixml pipeline options]   set up, then run the pipeline -> reports/demo/
#   bash run.sh test [pytest options]           set up, then run the tests
# VIXML_VENV=path picks another virtual environment; PYTHON=python3.11 another interpreter.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VIXML_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed"'
    echo "run.sh: creating virtual environment $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.vixml-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-nodeps.txt -nt "$stamp" ]; then
    echo "run.sh: installing the workbench into $VENV (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # CPU set-up: pin torch so pip takes the CPU build; GPU users bring their own (environment.yml).
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -e ".[cpu,test]"
    # Packages whose own requirements we don't need (see the file): no dependencies.
    "$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
    touch "$stamp"
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) setup; exec "$VENV/bin/vixml" -v pipeline --params configs/demo.yaml "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  setup) setup ;;
  *) echo "usage: bash run.sh demo|test|setup [options]" >&2; exit 2 ;;
esac
