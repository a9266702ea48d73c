#!/usr/bin/env bash
# deps.sh — install what gml-dist needs to build and test, from Debian
# packages (+ the PyPI `tensorboard` package into .venv for the TensorBoard
# reader test). Idempotent: installs only what is missing. Sourced or run by
# tools/setup.sh and tools/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKGS="build-essential cmake ninja-build pkg-config libyaml-dev libprotobuf-c-dev protobuf-c-compiler
libcmocka-dev libhdf5-dev hdf5-tools libopenblas-dev libopenblas0-openmp libopenmpi-dev openmpi-bin fortunes
python3 python3-venv python3-pip python3-torch python3-h5py python3-numpy"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# Python for the reference tests: Debian's python3 (torch, h5py) in a venv
# that sees the system packages, plus tensorboard from PyPI.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import tensorboard, torch, h5py" 2>/dev/null; then
  echo "deps: preparing .venv (tensorboard)"
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check tensorboard
fi
