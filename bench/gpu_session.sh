#!/bin/bash
# One prepared run for a lent GPU (docs/scaling.md, "When a GPU is lent"): everything that needs
# no model weights, so the working tree alone travels (the device image has torch, transformers,
# safetensors, typer, rich, pytest). About 5 minutes on an H100/H200. Writes six files to
# $OUT (default runs/gpu):
#   env.txt          GPU, driver, torch, CPU model, commit
#   pytest_cuda.txt  the CUDA tests (tests/test_cuda.py, the CUDA cases of tests/test_kernels.py)
#   train_step.json  W1 step (B 4096, d_in 576, d_sae 9216, k 32) vs its fp32 GEMM, AuxK 0/3/10/100 % dead
#   precision.json   encoder GEMM and AbsTopK step, fp32 vs bf16 autocast (B 4096, d_sae 4608)
#   sparse_ops.txt   sparse vs dense products of the fixed-k kernels
#   loader_feed.txt  rows/s of the host and device loaders against a GPU step's needs
# DEVICE=cpu QUICK=1 bench/gpu_session.sh runs the same chain small on a CPU (a smoke test).
set -u
OUT=${OUT:-runs/gpu}
DEV=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [ -n "${QUICK:-}" ]; then
  STEP_ARGS="--quick"; PREC_ARGS="--batch 256 --d-sae 512 --repeats 2"
  SPARSE_ARGS="--B 256 --F 1024 --m 32 --reps 2"; FEED_ARGS="--quick"
else
  STEP_ARGS="--repeats 3"; PREC_ARGS="--batch 4096 --d-sae 4608 --repeats 20"
  SPARSE_ARGS=""; FEED_ARGS=""
fi
stamp() { echo "[$(date -u +%FT%TZ)] $*"; }
{
  stamp "start"
  nvidia-smi 2>&1 | head -15
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda);
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
  lscpu | grep -E "Model name|^CPU\(s\)"
  git rev-parse HEAD 2>/dev/null
} > "$OUT/env.txt" 2>&1
stamp "cuda tests"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kernels.py -k "cuda" \
  > "$OUT/pytest_cuda.txt" 2>&1
stamp "train step"
$PY bench/train_step.py --device "$DEV" $STEP_ARGS --json "$OUT/train_step.json" \
  --only gemm_matmul,gemm_addmm_out,abstopk_topk,abstopk_abstopk,abstopk_abstopk_aux3,abstopk_abstopk_aux10,abstopk_abstopk_aux \
  > "$OUT/train_step.txt" 2>&1
stamp "precision"
$PY bench/precision.py --only gemm,step --device "$DEV" $PREC_ARGS --json "$OUT/precision.json" \
  >> "$OUT/train_step.txt" 2>&1
stamp "sparse ops"
$PY bench/sparse_ops.py --device "$DEV" $SPARSE_ARGS > "$OUT/sparse_ops.txt" 2>&1
stamp "loader feed"
$PY bench/loader_feed.py --device "$DEV" $FEED_ARGS > "$OUT/loader_feed.txt" 2>&1
stamp "done"; tail -n 3 "$OUT"/pytest_cuda.txt
