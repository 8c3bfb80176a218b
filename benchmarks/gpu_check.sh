#!/usr/bin/env bash
# GPU check (issue 15): on a CUDA machine, run the GPU-gated tests and the prediction benchmarks at float32
# and bf16-mixed on a 3-D plate shaped like VisCy's reference predict.yml and on the 2-D plate, and print model-only
# vs whole-pipeline cells/s.
# Target: whole pipeline >= 0.9x model only at bf16 (the data path keeps the GPU fed).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]            # default OUT_DIR: ./gpu_check_<date>
#
# Environment: PYTHON (default: python), PLATES (default "3d:4000 2d:40000": kind:cells pairs), BATCH_3D (128),
# BATCH_2D (512), BATCH (both), REPEATS (1), LOADER_THREADS (default: nproc - 2, at most 14), STEP_TIMEOUT (400 s
# per benchmark), PLATE_ROOT (where the plates are written and removed again; default OUT_DIR).
# Everything printed is also written to OUT_DIR/gpu_check.log, figures to OUT_DIR/*.json.
#
set -euo pipefail

PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$ROOT/gpu_check_$(date -u +%Y%m%dT%H%M%S)}
PLATES=${PLATES:-"3d:4000 2d:40000"}
REPEATS=${REPEATS:-1}
NPROC=$(nproc 2>/dev/null || echo 4)
LOADER_THREADS=${LOADER_THREADS:-$(( NPROC - 2 < 1 ? 1 : (NPROC - 2 > 14 ? 14 : NPROC - 2) ))}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
cd "$ROOT"

echo "== gpu_check $(date -u +%FT%TZ) in $ROOT -> $OUT"
"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch: this check needs a GPU")
p = torch.cuda.get_device_properties(0)
free, total = torch.cuda.mem_get_info()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s); "
      f"0: {p.name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), bf16 {torch.cuda.is_bf16_supported()}")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv

# 1. the GPU-gated tests (marked gpu; skipped without CUDA, so here they must run): a CUDA prediction of each
#    conformance case verified against VisCy's CPU reference
echo "== GPU-gated tests"
timeout "${STEP_TIMEOUT:-400}" "$PYTHON" -m pytest -q -rs -m gpu tests/test_verify_integration.py -p no:cacheprovider \
    || echo "!! GPU-gated tests FAILED"

# 2. benchmarks: data path, model only, batches and the whole CLI pipeline, float32 and bf16-mixed, per plate.
#    PLATES: "kind:cells" pairs. Batch sizes: BATCH_3D (default 128: the 3-D batch is 6 MB per cell on the host,
#    read ahead twice, and its percentile is pooled over the batch) and BATCH_2D (default 512); BATCH overrides both.
for spec in $PLATES; do
    kind=${spec%%:*}; cells=${spec##*:}
    if [ "$kind" = 3d ]; then batch=${BATCH:-${BATCH_3D:-128}}; else batch=${BATCH:-${BATCH_2D:-512}}; fi
    PLATE="${PLATE_ROOT:-$OUT}/plate_${kind}_${cells}"
    echo "== plate: $kind, $cells cells"
    t0=$SECONDS
    "$PYTHON" benchmarks/make_bench_plate.py "$PLATE" --cells "$cells" --kind "$kind" | tail -1
    echo "   (plate written in $(( SECONDS - t0 )) s)"
    for precision in 32-true bf16-mixed; do
        echo "== benchmark: $kind plate, $cells cells, $precision, batch $batch, $LOADER_THREADS loader threads"
        timeout "${STEP_TIMEOUT:-400}" "$PYTHON" benchmarks/bench_predict.py --kind "$kind" --cells "$cells" \
            --plate-dir "$PLATE" --device cuda --precision "$precision" --batch-size "$batch" \
            --loader-threads "$LOADER_THREADS" --repeats "$REPEATS" --pipeline \
            --json "$OUT/bench_${kind}_${precision}.json" || echo "!! benchmark $kind $precision FAILED (exit $?)"
    done
    rm -rf "$PLATE"
done

# 4. the summary: model only vs whole pipeline per plate and precision
echo "== summary (target: whole pipeline >= 0.9x model only at bf16-mixed)"
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bench_*.json")):
    s = json.loads(f.read_text())
    m, p = s.get("model_cells_per_s[eager]"), s.get("pipeline_cells_per_s[eager]")
    b = s.get("batches_cells_per_s[eager]")
    ratio = p / m if m and p else float("nan")
    flag = "" if s["precision"] != "bf16-mixed" else ("  OK" if ratio >= 0.9 else "  BELOW TARGET")
    print(f"{s['kind']} {s['precision']:>10} batch {s['batch_size']}: data path {s['data_cells_per_s']:,.0f}, "
          f"model only {m:,.0f}, batches {b:,.0f}, whole pipeline {p:,.0f} cells/s; "
          f"pipeline/model {ratio:.2f}{flag}")
EOF
echo "== done: $LOG"
