#!/usr/bin/env bash
# Install callguard with its test tools into ./.venv and run the checks: ruff, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k agi`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check callguard tests scripts
.venv/bin/python -m pytest "$@"
