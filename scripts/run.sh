#!/usr/bin/env bash
# Runs the registry with its embedded default: a root ReadWrite registry on 127.0.0.1:8080.
# Extra arguments go to `connected-registry serve` (for example --data DIR --listen HOST:PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/connected-registry serve "$@"
