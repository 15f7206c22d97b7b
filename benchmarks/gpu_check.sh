#!/usr/bin/env bash
# The prepared GPU run: about 8 minutes on one H100, from a fresh checkout plus one carried folder.
#
#   1. features on 20,000 real JPEGs (the 1,300 of ilsvrc2012_val_1300, linked in turn): the naive
#      PIL DataLoader + float32 against our fast path (nvJPEG batch decode + bf16), img/s and ratio;
#   2. benchmarks/bench_rpn.py: the hourglass RPN at VGG-16 width, bf16 + channels_last against
#      float32, training and proposal img/s;
#   3. the short GPU training recipe below on the 1,048 training images of RESULTS.md's split, then
#      eval-baseline on the 252 held-out images with the sliding window beside it. Selective Search
#      needs opencv-contrib, which the GPU machine lacks: its row comes from the CPU run in RESULTS.md
#      (same images, same scoring code).
#
# It prints one summary block and writes RESULTS-ready Markdown to $OUT/gpu_results.md.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run]
#   DATA  the real data (default: gpu_data/ilsvrc2012_val_1300, a copy of ../shared/data/ilsvrc2012_val_1300
#         in an ignored folder, so that it travels to the GPU machine)
#   OUT   where the results go (default: ./gpu_check_out)
#   PY    the Python that has torch (default: python3); the package is used from this checkout (PYTHONPATH)
#   --dry-run  every step shrunk, on the CPU, in a few minutes: checks the script, not the GPU
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
DATA=${DATA:-gpu_data/ilsvrc2012_val_1300}
OUT=${OUT:-$PWD/gpu_check_out}
PY=${PY:-python3}
mkdir -p "$OUT"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export EIC_NO_PROGRESS=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# small pure-Python wheels carried in .whl/ (defusedxml: the GPU machine lacks it) import from the zip
for wheel in .whl/*.whl; do [ -e "$wheel" ] && PYTHONPATH="$PYTHONPATH:$PWD/$wheel"; done
EIC="$PY -m eic_builder.cli"
if [ "$DRY" = 1 ]; then
  DEV=cpu; N=48; WORKERS=2; BATCH=16; TRAIN_MINUTES=1.5
  RPN_BENCH=(--width 0.125 --iters 2 --images 2 --scales 256 --train-scale 256 --images-per-batch 2)
  TRAIN=(--iters 4 --images-per-batch 2 --width 0.125 --workers 0 --checkpoint-every 2)
  SCALES=227; MAX_IMAGES=(--max-images 8)
else
  DEV=cuda; N=20000; WORKERS=16; BATCH=256; TRAIN_MINUTES=4.5
  RPN_BENCH=(--iters 20 --images 20)
  # the short GPU recipe: VGG-16 layout at half width with batch norm, from scratch, AdamW, positives at
  # IoU 0.5, scales around the images' own 227 px; --minutes stops it with a checkpoint at the
  # iteration reached
  TRAIN=(--iters 4000 --images-per-batch 16 --optimizer adamw --lr 1e-3 --lr-step 1500 --pos-iou 0.5
         --train-scales 227,288,340 --width 0.5 --workers 12 --checkpoint-every 500)
  SCALES=227,340,454; MAX_IMAGES=()
fi
[ -f "$DATA/LOC_val_solution.csv" ] || { echo "gpu_check: no real data in $DATA (copy ../shared/data/ilsvrc2012_val_1300 there)"; exit 2; }
{
  echo "== machine"
  $PY -c "import torch, torchvision; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

  echo "== 1. features: naive vs fast, $N real JPEGs"
  EIC_RESULTS_DIR="$OUT" $PY benchmarks/bench_features.py --images "$N" --source "$DATA/val" --device "$DEV" \
      --workers "$WORKERS" --batch-size "$BATCH" --no-compile --cache "$W/features" --store | tee "$OUT/features.txt"

  echo "== 2. RPN speed: bf16 + channels_last vs float32"
  EIC_RESULTS_DIR="$OUT" $PY benchmarks/bench_rpn.py --device "$DEV" "${RPN_BENCH[@]}" --cache "$W/rpn" --store \
      | tee "$OUT/rpn_speed.txt"

  echo "== 3. short GPU training on 1,048 real images, eval on the 252 held out"
  $EIC -q scan "$DATA" --out "$W/val1300" --no-wordnet-check
  $EIC -q hold-out "$W/val1300" --train-out "$W/rpn_train" --test-out "$W/rpn_heldout" --test-fraction 0.2 --seed 0
  start=$(date +%s)
  $EIC train-baseline "$W/rpn_train" --out "$W/run" --device "$DEV" "${TRAIN[@]}" --minutes "$TRAIN_MINUTES"
  echo "training wall time: $(( $(date +%s) - start )) s"
  tail -n 1 "$W/run/metrics.jsonl" | tee "$OUT/last_metrics.json"
  $EIC eval-baseline "$W/rpn_heldout" --out "$W/eval" --checkpoint "$W/run/last.pt" --method sliding-window \
      --scales "$SCALES" --device "$DEV" "${MAX_IMAGES[@]}"
  cp "$W/eval/metrics.json" "$W/eval/metrics.md" "$W/eval/recall_iou.png" "$OUT/" 2>/dev/null || true
  # the stored runs (benchmarks/results/) of the three steps land in $OUT: committing them is all it takes
  PYTHONPATH=. $PY benchmarks/results.py import "$W/eval" --name gpu-short-training --runs "$OUT"
  cp "$W/run/config.json" "$OUT/train_config.json"
} 2>&1 | tee "$OUT/gpu_check.log"

$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
log = (out / "gpu_check.log").read_text()
device = next((l for l in log.splitlines() if l.startswith("device:")), "device: ?")
features = (out / "features.txt").read_text().strip()
rpn = (out / "rpn_speed.txt").read_text().strip()
metrics = (out / "metrics.md").read_text().strip() if (out / "metrics.md").exists() else "(no metrics)"
last = (out / "last_metrics.json").read_text().strip()
cfg = json.loads((out / "train_config.json").read_text())
it = json.loads(last)["iter"] if last else "?"
text = f"""## GPU run (`bash benchmarks/gpu_check.sh`)

{device}

### Features, end to end
```
{features}
```

### RPN speed
```
{rpn}
```

### Short GPU training (to iteration {it}), scored on the 252 held-out real images
Recipe: width {cfg['width']}, {cfg['optimizer']} lr {cfg['lr']} (halved every {cfg['lr_step']}), {cfg['images_per_batch']} images per batch, scales {cfg['train_scales']}, positives at IoU {cfg['pos_iou']}, dtype {cfg['dtype']}.

{metrics}

Selective Search on the same 252 images: see RESULTS.md (its CPU run).
"""
(out / "gpu_results.md").write_text(text)
print("=" * 72)
print(text)
PYEOF
