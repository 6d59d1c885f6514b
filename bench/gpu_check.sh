#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with a GPU:
#   1. the CUDA tests (`pytest -m cuda`: every method, DeepLIFT, SHAP-CAM, the runner and the VQA
#      model give on the GPU what they give on the CPU),
#   2. the speed benchmark on the GPU (bench/run.py --device cuda), written to OUT/bench_cuda.md,
#   3. chapters run on DEVICE=cuda at their CUDA sizes (the paper's), executed notebooks and
#      results in OUT/chapters.tar (no HTML: copy them back and `python -m cam_core book --skip-execute`).
#
# usage: bench/gpu_check.sh OUT [CHAPTER ...]      (default chapter: 04)
#   PYTHON=.venv/bin/python by default; each step has its own time limit (seconds, env vars
#   TESTS_S, BENCH_S, CHAPTERS_S) so that one slow step does not starve the others.
set -u
OUT=${1:?usage: bench/gpu_check.sh OUT [CHAPTER ...]}
shift
CHAPTERS=${*:-04}
PY=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-tests chapters bench}  # a subset to run only those
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) $*"; }

log "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

if [[ " $STEPS " == *" tests "* ]]; then
log "1. CUDA tests"
timeout "${TESTS_S:-240}" "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
log "CUDA tests rc=$?"
fi

if [[ " $STEPS " == *" chapters "* ]]; then
log "2. chapters ${CHAPTERS} on DEVICE=cuda"
timeout "${CHAPTERS_S:-240}" "$PY" -m cam_core book --no-html --device cuda --only ${CHAPTERS} \
    --build-dir "$OUT/book" --results "$OUT/book/results"
log "chapters rc=$?"
tar -C "$OUT" -cf "$OUT/chapters.tar" book/notebooks book/results 2>/dev/null && rm -rf "$OUT/book"
fi

if [[ " $STEPS " == *" bench "* ]]; then
log "3. speed benchmark on cuda"
timeout "${BENCH_S:-300}" "$PY" bench/run.py --device cuda --baseline-images 8 --out "$OUT/bench_cuda.md"
log "bench rc=$?"
fi
