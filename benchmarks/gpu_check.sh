#!/usr/bin/env bash
# The one-command GPU check (benchmarks/gpu_check.py says what it runs), within 8 minutes on one GPU:
#
#   bash benchmarks/gpu_check.sh OUT             # on a CUDA machine; OUT/summary.md holds the figures
#   bash benchmarks/gpu_check.sh --dry-run OUT   # every step on the CPU on tiny sizes (the slow tests run this)
#
# It brings what it needs: CIFAR-10 in .data/ and the wheels of packages the machine may lack (pydantic) in
# .whl/, both prepared here by benchmarks/gpu_prepare.sh and git-ignored. The wheels are installed into a
# private folder on PYTHONPATH, never into the machine's Python. LOSSBENCH_PYTHON picks the Python (default:
# this checkout's .venv if there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=()
out=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=(--dry-run) ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $arg (allowed: --dry-run)" >&2; exit 2 ;;
    *) if [[ -n "$out" ]]; then echo "error: one OUT folder only (got $out and $arg)" >&2; exit 2; fi; out="$arg" ;;
  esac
done
if [[ -z "$out" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--dry-run] OUT" >&2
  exit 2
fi

python="${LOSSBENCH_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
    python=.venv/bin/python
  else
    python=python3
  fi
fi

# Carried wheels go in only where that Python lacks them (a uv virtual environment has them and no pip).
if compgen -G ".whl/*.whl" > /dev/null && ! "$python" -c "import pydantic" 2>/dev/null; then
  site="${TMPDIR:-/tmp}/lossbench-gpu-check-site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$("$python" -c "
import importlib.util
need = ['torch', 'torchvision', 'typer', 'rich', 'pandas', 'yaml', 'pydantic', 'matplotlib', 'scipy', 'sklearn', 'pytest']
print(' '.join(n for n in need if importlib.util.find_spec(n) is None))")
if [[ -n "$missing" ]]; then
  echo "error: $python lacks: $missing (run benchmarks/gpu_prepare.sh here to bring wheels in .whl/)" >&2
  exit 2
fi

exec "$python" benchmarks/gpu_check.py "${dry_run[@]}" --python "$python" "$out"
