#!/usr/bin/env bash
# Install cognimamba into .venv, then optionally run a job:
#   ./setup.sh quickstart [options]   train and try a small model on the built-in stories (offline)
#   ./setup.sh test [pytest args]     run the test suite
# torch is installed first and pinned (TORCH_SPEC), so pip never pulls a different multi-GB build for a range.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
job="${1:-}"
[ $# -gt 0 ] && shift
case "$job" in
    quickstart) exec .venv/bin/cogni quickstart "$@" ;;
    test) HF_HUB_OFFLINE=1 exec .venv/bin/python -m pytest -q -n auto "$@" ;;
    "") echo "installed: source .venv/bin/activate, then run cogni --help" ;;
    *) echo "usage: ./setup.sh [quickstart|test] [args...]" >&2; exit 2 ;;
esac
