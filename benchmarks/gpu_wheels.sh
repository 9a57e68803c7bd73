#!/usr/bin/env bash
# Wheels for a CUDA machine that reaches no package index (benchmarks/gpu_check.sh installs them there).
#
#   bash benchmarks/gpu_wheels.sh [DIR]        (default DIR: .whl, ignored by git)
#
# Such machines (the H200s lent here) have Python 3.12 with torch, torchvision, Lightning, torchmetrics,
# OpenCV (headless), onnx and onnxruntime, but not what this project adds: Ultralytics and its two small
# helpers, lap (the trackers' assignment), jsonargparse (LightningCLI) and its signature helpers. Versions
# are the ones this machine's venv has, else the newest; only binary wheels for CPython 3.12 on x86-64
# Linux, without dependencies (the machine has the rest). PyAV (~40 MB, only for uncompressed AVIs) and the
# onnxruntime-gpu / TensorRT wheels (hundreds of MB) are left out: too big to travel.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$DIR"
pinned() {  # NAME==VERSION as installed here, else NAME
  local v
  v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || true)
  echo "$1${v:+==$v}"
}
PKGS=(ultralytics ultralytics-thop ultralytics-platform lap jsonargparse docstring-parser typeshed-client)
SPECS=()
for p in "${PKGS[@]}"; do SPECS+=("$(pinned "$p")"); done
PLAT=()
for n in 2_28 2_27 2_24 2_17 2_5; do PLAT+=(--platform "manylinux_${n}_x86_64"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${SPECS[@]}"
ls -l "$DIR"
size=$(du -sm "$DIR" | cut -f1)
echo "${#SPECS[@]} wheels in $DIR: ${size} MB (${SPECS[*]})"
if [ "$size" -ge 60 ]; then echo "error: $DIR is ${size} MB, over the 60 MB that may travel" >&2; exit 1; fi
