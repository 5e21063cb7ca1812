#!/usr/bin/env bash
# Install the project and everything it needs into a virtual environment.
#
#   scripts/install.sh [VENV_DIR]        (default: .venv)
#
# Plain `pip install -e .[all]` is not enough here, for three reasons written
# down in README.md ("Versions and why"): torch must come before the rest so
# pip does not pick another build, and mmpose / img2dataset declare
# requirements that cannot be met on Python 3.11 (chumpy) or that clash with
# the rest of the stack (webdataset<0.3, pandas<3), so they are installed
# without their declared dependencies; their real run-time needs are in the
# `pose` and `pipelines` extras. xtcocotools is built from source (its wheel
# is built for numpy 1). Every call is constrained by constraints.txt, the
# whole environment pinned to the versions the tests passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${FYP_EXTRAS:-all,dev}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# constraints.txt pins the whole environment (scripts/lock.sh): the versions CI tested, no backtracking.
pip=("$venv/bin/python" -m pip install --progress-bar off -c constraints.txt)

"${pip[@]}" "setuptools<81" wheel
# torch first: the pinned pair, so nothing later pulls another build.
torch_pins=$("$venv/bin/python" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if re.match(r"torch(vision)?==", d)))
PY
)
"${pip[@]}" $torch_pins
"${pip[@]}" -e ".[${extras}]"
no_deps=$("$venv/bin/python" - <<'PY'
import tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["follow-your-pose"]["install-without-deps"]))
PY
)
"${pip[@]}" --no-deps $no_deps
from_source=$("$venv/bin/python" - <<'PY'
import tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["follow-your-pose"]["install-from-source"]))
PY
)
for spec in $from_source; do
  "${pip[@]}" --no-binary "${spec%%=*}" "$spec"
done
"$venv/bin/python" -m pip check || echo "(pip check lists the declared pins of mmpose/img2dataset, installed on purpose without them)"
echo "installed into $venv"
