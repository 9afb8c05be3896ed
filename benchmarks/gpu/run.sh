#!/usr/bin/env bash
# The GPU benchmark on a lent machine (benchmarks/gpu_step.py; benchmarks/gpu/README.md): installs the wheels
# carried in .whl/ if any, then prints one JSON line and writes it to $OUT/gpu_step.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/gpu_step.py --out "${OUT:-.}/gpu_step.json" "$@"
