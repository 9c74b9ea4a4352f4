#!/usr/bin/env bash
# Installs what the tests need (see scripts/setup.sh --test) and runs the whole suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
