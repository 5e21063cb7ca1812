#!/usr/bin/env bash
# Rewrite constraints.txt: the exact versions of everything in a working environment (the one
# scripts/install.sh built and the test suite passed in), so every later install resolves the same
# way without pip backtracking. Run after changing a pin in pyproject.toml:
#
#   bash scripts/install.sh .venv && bash scripts/lock.sh .venv && bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
{
  echo "# The whole environment, pinned (scripts/lock.sh wrote it from an install that passed the tests)."
  echo "# scripts/install.sh passes it to every pip call with -c: pip then never backtracks."
  "$venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
