#!/usr/bin/env bash
# Install everything (system packages the tests use, then the project) and run the whole test suite.
#
#   bash scripts/test.sh [pytest args...]
#
# System packages: Debian's chromium renders the evaluation report in a real
# headless browser. It is installed with apt when missing and apt is usable.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will say so"
fi
bash scripts/install.sh .venv
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
