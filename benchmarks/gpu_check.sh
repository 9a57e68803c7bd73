#!/usr/bin/env bash
# The GPU check in one go: set up what the machine lacks, then the CUDA tests and the figures
# (benchmarks/gpu_check.py; without CUDA it runs on the CPU at tiny sizes, as CI does).
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --shared DIR --checkpoint best.ckpt]
#
# On a machine that reaches no package index, the wheels of benchmarks/gpu_wheels.sh (in .whl/, made
# beforehand where pip works) are installed into a private folder with --no-index; nothing else is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
"$PY" - <<'PYEOF' || true
try:
    import onnxruntime as ort
    print("onnxruntime", ort.__version__, "offers:", ", ".join(ort.get_available_providers()))
except ImportError:
    print("onnxruntime: not installed")
PYEOF
missing=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in ('ultralytics', 'lap', 'jsonargparse') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
  WHL=${GPU_WHEELS:-.whl}
  if ! ls "$WHL"/*.whl > /dev/null 2>&1; then
    echo "error: $missing not installed and no wheels in $WHL: run 'bash benchmarks/gpu_wheels.sh' where pip works, and bring $WHL along" >&2
    exit 2
  fi
  SITE=${TMPDIR:-/tmp}/gpu-check-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed from $WHL: $missing"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
