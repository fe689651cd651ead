#!/usr/bin/env bash
# Install what the tests need and run the whole suite.
#   - a virtualenv in .venv with the project and its dev (and, where possible, train) extras;
#   - as root: Debian's mosquitto and chromium (and systemd-analyze) when missing;
#     elsewhere the broker and browser tests skip, naming what to install.
# Extra arguments go to pytest, e.g. tests/run.sh -k capture -x
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# setuptools >= 70.1 builds wheels by itself: the installer tests build the package offline
# from this environment (systemd/install.sh --reuse-site-packages).
.venv/bin/python -m pip install --quiet --upgrade pip 'setuptools>=70.1'
.venv/bin/python -m pip install --quiet -e '.[dev]'
# torch is large: take the CPU build where this machine offers it, else training tests skip.
.venv/bin/python -m pip install --quiet -e '.[train]' \
    || echo "note: torch/onnx for training could not be installed; training tests will skip" >&2

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    missing=()
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
    command -v chromium >/dev/null || missing+=(chromium)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

exec .venv/bin/python -m pytest "$@"
