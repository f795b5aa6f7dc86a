#!/usr/bin/env bash
# One-shot GPU benchmark of the model families: batch 8, 512x512, bf16 autocast, train-step time and peak
# memory with Region Rebalance off and on; headline UPerNet + Swin-T. Finishes in under 4 minutes on an
# H100 (models start only within a time budget). Prints a Markdown table and writes "$OUT/gpu_models.md"
# when OUT is set. Run from the repository root:
#     bash benchmarks/gpu.sh
# Needs python3 with torch (CUDA), timm, safetensors, numpy, pyyaml; segmentation-models-pytorch may come
# as a wheel in .whl/ (installed to /tmp/site, no network); rrseg itself is used from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src"
if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD/src:/tmp/site"
fi
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
python3 -c "import torch, timm, segmentation_models_pytorch as smp; print('torch', torch.__version__, '| timm', timm.__version__, '| smp', smp.__version__, '| cuda', torch.cuda.is_available())"
args=(--device cuda --batch 8 --size 512 --amp bf16 --warmup 3 --steps 10 --budget-s 150)
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  args+=(--out "$OUT/gpu_models.md")
fi
timeout 225 python3 benchmarks/gpu_models.py "${args[@]}" "$@"
