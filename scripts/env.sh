#!/usr/bin/env bash
# The one environment step every entry point reuses (idempotent): creates .venv with the pinned
# stack, builds ros_vilasr_interfaces into it, installs ros_vilasr and vilasr-train editable.
# A second run with nothing changed only compares a hash and exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VILASR_VENV:-$ROOT/.venv}"
STAMP="$VENV/.vilasr-env"
cd "$ROOT"

inputs=(requirements.txt requirements-ros.txt setup.py setup.cfg training/pyproject.toml scripts/env.sh
        scripts/build_interfaces.sh ros_vilasr_interfaces/CMakeLists.txt
        ros_vilasr_interfaces/package.xml ros_vilasr_interfaces/msg/* ros_vilasr_interfaces/srv/* ros_vilasr_interfaces/action/*)
want="$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  exit 0
fi

step() { echo "[env] $*" >&2; }
PYTHON="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || { step "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
step "installing CPU torch and the pinned stack (first run: a few minutes)"
# torch first, pinned alone: a looser spec resolved by another package pulls GBs of CUDA wheels.
"${PIP[@]}" torch==2.13.0
DS_BUILD_OPS=0 "${PIP[@]}" -r requirements.txt -r requirements-ros.txt
step "building ros_vilasr_interfaces"
scripts/build_interfaces.sh "$VENV" >&2
step "installing ros_vilasr and vilasr-train (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e . -e training
echo "$want" > "$STAMP"
step "ready: $VENV"
