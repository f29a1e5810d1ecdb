#!/usr/bin/env bash
# pip's resolver, run for each target platform (JetPack 6 cp310 aarch64, JetPack 7 cp312 aarch64, x86_64 desktops
# cp310-cp312), wheels only, with the target's constraints. Needs the package registry; not part of the test run.
#   bash scripts/check_targets.sh [jetpack6 jetpack7 desktop-cp310 desktop-cp311 desktop-cp312]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/check_targets.py "$@"
