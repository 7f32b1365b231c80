#!/usr/bin/env bash
# Install dfdcap and everything it needs on a Debian machine (run as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs="libopenni2-0 libopenni2-dev libusb-1.0-0 adb"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs >/dev/null
fi
PY=${PYTHON:-python3}
# torch first and pinned; a looser requirement may pull a multi-GB CUDA build. On plain PyPI the
# pin is a CUDA build too: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the CPU one.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  $PY -m pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
else
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -e '.[dev]'
# Compile the reprojection and visibility kernels now (numba caches them on disk), not in the first build-dataset.
$PY -c "from dfdcap.dataset.visibility import warm_up; warm_up()"
