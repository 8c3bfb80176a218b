#!/usr/bin/env bash
# GPU check (issue 15): on a CUDA machine, run the GPU-gated tests and the prediction benchmarks at float32
# and bf16-mixed with a batch that fills the device, and print model-only vs whole-pipeline cells/s.
# Target: whole pipeline >= 0.9x model only at bf16 (the data path keeps the GPU fed).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]            # default OUT_DIR: ./gpu_check_<date>
#
# Environment: PYTHON (default: python), CELLS (40000), BATCH (default: picked from free GPU memory),
# REPEATS (2), LOADER_THREADS (default: min(8, nproc)), KIND (3d; or "2d 3d" for both plates).
# Everything printed is also written to OUT_DIR/gpu_check.log, figures to OUT_DIR/*.json.
#
# Status: written without a GPU (none was lent to the session that wrote it); unrun.
set -euo pipefail

PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$ROOT/gpu_check_$(date -u +%Y%m%dT%H%M%S)}
CELLS=${CELLS:-40000}  # at 4,000 cells a GPU run lasts seconds and start-up dominates
REPEATS=${REPEATS:-2}
KIND=${KIND:-3d}
NPROC=$(nproc 2>/dev/null || echo 4)
LOADER_THREADS=${LOADER_THREADS:-$(( NPROC < 8 ? NPROC : 8 ))}
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
"$PYTHON" -m pytest -q -rs -m gpu tests/test_verify_integration.py -p no:cacheprovider || echo "!! GPU-gated tests FAILED"

# 2. a batch that fills the device: the largest power of two whose forward fits in ~70 % of free memory
if [ -z "${BATCH:-}" ]; then
BATCH=$("$PYTHON" - "$KIND" <<'EOF'
import sys
sys.path.insert(0, "benchmarks")
import torch
from bench_predict import make_model
kind = sys.argv[1].split()[-1]
model = make_model(kind).cuda().eval()
shape = (2, 30) if kind == "3d" else (1, 1)
best = 16
with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    for b in (32, 64, 128, 256, 512, 1024):
        try:
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            model(torch.randn(b, *shape, 160, 160, device="cuda"))
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            if torch.cuda.max_memory_allocated() > 0.7 * total:
                break
            best = b
        except torch.cuda.OutOfMemoryError:
            break
print(best)
EOF
)
fi
echo "== batch size $BATCH (override with BATCH=...), loader threads $LOADER_THREADS, $CELLS cells, $REPEATS repeats"

# 3. benchmarks: data path, model only, batches and the whole CLI pipeline, float32 and bf16-mixed
for kind in $KIND; do
    PLATE="$OUT/plate_${kind}_${CELLS}"
    for precision in 32-true bf16-mixed; do
        echo "== benchmark: $kind plate, $precision"
        "$PYTHON" benchmarks/bench_predict.py --kind "$kind" --cells "$CELLS" --plate-dir "$PLATE" \
            --device cuda --precision "$precision" --batch-size "$BATCH" --loader-threads "$LOADER_THREADS" \
            --repeats "$REPEATS" --pipeline --json "$OUT/bench_${kind}_${precision}.json"
    done
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
