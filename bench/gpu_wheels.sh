#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py installs on a GPU machine that cannot reach PyPI.
#
#   bash bench/gpu_wheels.sh [DIR]        # default DIR: .whl in the checkout (git-ignored)
#
# The lent device machines have Python 3.12, CuPy (cupy-cuda13x 14.2), PyTorch, NumPy,
# pytest, pytest-timeout, hypothesis and their needs, but not array-api-compat (which
# nnkernel needs) or array-api-strict (which the tests use). The others are fetched too, in
# case an image lacks them: gpu_check.py installs only the wheels whose package it cannot
# import, without their dependencies, from --wheels DIR (default .whl) into a temporary
# folder; it never changes the machine's own environment. One version of each package.
# The wheels are for the device machine's CPython (PY, default 3.12) on x86-64 Linux, with
# the platform tags the device tool's README lists. Carry the folder with the command
# (device run: carry [".whl"]); wheels are never committed (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.whl}"
mkdir -p "$dir"
py="${PY:-3.12}"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" \
    --python-version "$py" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    "array-api-compat==1.16.0" "array-api-strict==2.6.1" \
    "pytest-timeout>=2.3" "pytest>=8" "hypothesis>=6" \
    "pluggy>=1.5" "iniconfig>=2" "sortedcontainers>=2" "attrs>=23"
ls -l "$dir"
du -sh "$dir"
