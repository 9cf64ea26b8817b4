#!/usr/bin/env bash
# The full end-to-end benchmark (every model, clip, case and precision of the gpu preset) on a GPU machine, the
# (model, clip) pairs dealt round-robin to its GPUs: one process per GPU, each timing dense XLA and delta of its
# rows on its own card. Builds deltajax with CUDA first. Writes OUTDIR/e2e_gpu<i>.json (rows are written as they
# finish, so a run cut short keeps what it measured), the logs, and OUTDIR/end_to_end.json with every row.
# Usage: scripts/gpu_e2e.sh OUTDIR [SECONDS: each process's time limit, default 540] [benchmark arguments]
# MODELS and VIDEOS (space-separated) pick the pairs (default: the preset's four models, both bundled clips).
set -uo pipefail
OUTDIR=$1
LIMIT=${2:-540}
shift $(($# > 1 ? 2 : 1))
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
source scripts/gpu_setup.sh

build_cuda || exit 1
export XLA_FLAGS="${XLA_FLAGS:-} $BEST_XLA_FLAGS"
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
pairs=()
for video in ${VIDEOS:-deltajax/data/one-by-one-person-detection.mp4 deltajax/data/asl_gestures_book.mkv}; do
  for model in ${MODELS:-efficientnet_lite0 mobilenet_v2 pose superres}; do
    pairs+=("$model $video")
  done
done
deadline=$(($(date +%s) + LIMIT))
for ((g = 0; g < gpus; g++)); do
  (
    for ((k = g; k < ${#pairs[@]}; k += gpus)); do
      read -r model video <<<"${pairs[k]}"
      CUDA_VISIBLE_DEVICES=$g timeout $((deadline - $(date +%s))) $PY -m benchmarks.end_to_end --preset gpu \
        --models "$model" --video "$video" --out "$OUTDIR/e2e_gpu${g}_$k.json" "$@" || break
    done
  ) >"$OUTDIR/e2e_gpu$g.log" 2>&1 &
done
wait
$PY - "$OUTDIR" <<'PY'
import glob, json, sys

from deltajax.benchmark import add_vs_fastest, table

out = sys.argv[1]
parts = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/e2e_gpu*.json"))]
rows = [r for p in parts for r in p["rows"]]
add_vs_fastest(rows)
json.dump({"meta": parts[0]["meta"] if parts else {}, "rows": rows}, open(f"{out}/end_to_end.json", "w"), indent=1)
print(table(rows))
PY
