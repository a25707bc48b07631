#!/usr/bin/env bash
# Runs the whole test suite. Installs the Python packages and the Debian tools (skopeo, docker-registry, wrk,
# debootstrap, ...) first.
# Checks the layer rules of the package (import-linter's contracts in pyproject.toml) before the tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest -q "$@"
