#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages included), then run it.
#
#   scripts/test-all.sh            # what CI (.ci/run) runs; needs root or sudo for apt-get
#   scripts/test-all.sh -k flip    # extra arguments go to pytest
#
# Idempotent: installed packages are kept. Exit code: pytest's, except that "no tests
# collected" (5) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

echo "== system packages"
$SUDO apt-get update -qq
$SUDO bash scripts/install-speech-deps.sh     # espeak-ng, mbrola voices, flite, sox (speech corpus)
$SUDO apt-get install -y -qq chromium >/dev/null   # headless browser for the viewer tests

echo "== python packages"
python -m pip install -q torch==2.13.0        # the CPU wheel; any other version pulls gigabytes
python -m pip install -q -e '.[train,serve,ray,dev]'
python -m pip install -q --no-deps zennit==0.5.1   # the oracle; its metadata would pull torchvision
python -m pip install -q --no-deps tritonclient    # only its model_config protobuf definitions are used
python -m pip install -q --no-deps "lxt==2.1"       # the AttnLRP oracle; its metadata pulls accelerate, bitsandbytes, open_clip

echo "== javascript packages"
(cd web && npm ci --no-audit --no-fund --loglevel=error)   # onnxruntime-web, pinned by web/package-lock.json

echo "== tests"
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test-all: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
