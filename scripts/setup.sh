#!/usr/bin/env bash
# Installs what the project needs into .venv (and, with --test, the Debian tools the tests drive).
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
    missing=()
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v wrk >/dev/null || missing+=(wrk)
    # real clients and daemons for tests/api/test_real_clients.py (the tests start them under temp dirs themselves)
    command -v containerd >/dev/null || missing+=(containerd)
    command -v dockerd >/dev/null || PATH="$PATH:/usr/sbin" command -v dockerd >/dev/null || missing+=(docker.io)
    command -v nginx >/dev/null || PATH="$PATH:/usr/sbin" command -v nginx >/dev/null || missing+=(nginx)
    # edgeHub's MQTT broker for tests/edge and tests/e2e (the simulated IoT Edge runtime)
    command -v mosquitto >/dev/null || PATH="$PATH:/usr/sbin" command -v mosquitto >/dev/null || missing+=(mosquitto)
    # PostgreSQL for the metadata store's postgresql backend (tests/support/postgres.py runs initdb and pg_ctl itself)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    # ip netns, ip link and tc for the shaped links of tests/support/netns.py (the tests run as root, as .ci/run does)
    PATH="$PATH:/usr/sbin:/sbin" command -v tc >/dev/null || missing+=(iproute2)
    # the base of the module image that tests/edge builds (tests/support/module_image.py)
    PATH="$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}" >&2
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        # The packages must not start system daemons (containerd, docker, nginx): without a policy-rc.d, put one
        # that denies every start (exit 101) in place for the install only.
        policy=/usr/sbin/policy-rc.d created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\n# temporary: written by scripts/setup.sh while it installs test packages\nexit 101\n' \
                | $SUDO tee "$policy" >/dev/null
            $SUDO chmod 755 "$policy"
            created_policy=1
            trap '$SUDO rm -f "$policy"' EXIT
        fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
    fi
fi

if [ "$want_test" = 1 ]; then
    # Azurite (Azure Blob Storage's emulator, npm) for the azure blob store's tests, in a cache folder of its own;
    # tests/support/azurite.py runs it from there (and installs it there itself when this did not run).
    azurite_cache="${AZURITE_CACHE:-$HOME/.cache/connected-registry-azurite}"
    if [ ! -x "$azurite_cache/node_modules/.bin/azurite-blob" ]; then
        command -v npm >/dev/null || { echo "installing Debian packages: npm" >&2; SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
            $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; }
        echo "installing azurite into $azurite_cache" >&2
        mkdir -p "$azurite_cache"
        npm install --no-audit --no-fund --silent --prefix "$azurite_cache" azurite@3 >/dev/null
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-$want_test"
if [ ! -f "$stamp" ]; then
    extra=""; [ "$want_test" = 1 ] && extra="[test]"
    .venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
