#!/usr/bin/env bash
# Runs the whole test suite. Installs the Python packages and the Debian tools (skopeo, docker-registry, wrk) first.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
