#!/usr/bin/env bash
# The hourglass RPN's CPU recipe (RESULTS.md, README "On a 2-core CPU"): train on the manifest TRAIN for at
# most 20 minutes on the CPU, then score it on the manifest TEST next to Selective Search, with the recipe's
# own test scales and NMS. One seed a call (SEED, default 0); RESULTS.md's figures are seeds 0, 1 and 2.
#
#   benchmarks/rpn_cpu_recipe.sh TRAIN TEST OUT [SEED]
#
# Writes OUT/seed<SEED>/run (the training run: config.json, metrics.jsonl, last.pt) and OUT/seed<SEED>/eval
# (metrics.json with the rows rpn, rpn-anchors and selective-search; metrics.md; proposals). Run again on
# the same OUT, it resumes a training cut short and scores again.
#
# The recipe: the `--tiny` network (VGG-16 layout at width 1/8, batch norm, AdamW, positives at IoU 0.5)
# trained at shorter sides 224..448 with the quality head (`--score object-x-iou`: proposals ranked by object
# probability x predicted IoU of the regressed box); scored at one scale an image (`--scales auto`: its own
# shorter side clamped into 224..448, so 227-px thumbnails and full-resolution photos alike are scored at a
# size the network trained at), NMS 0.7 across levels and scales (the paper's is 0.5) and box voting at IoU
# 0.7 (ours): FIDELITY.md. The choices were made on a validation part of the training images (RESULTS.md).
set -euo pipefail

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: $0 TRAIN TEST OUT [SEED]   (TRAIN, TEST: manifests with boxes; OUT: a new or this recipe's folder)" >&2
    exit 2
fi
TRAIN=$1
TEST=$2
OUT=$3
SEED=${4:-0}
RUN="$OUT/seed$SEED/run"
EVAL="$OUT/seed$SEED/eval"

RESUME=()
if [ -f "$RUN/last.pt" ]; then
    RESUME=(--resume)
fi
eic-build train-baseline "$TRAIN" --out "$RUN" "${RESUME[@]}" --tiny --seed "$SEED" --minutes 20 \
    --train-scales 224,288,352,416,448 --iters 7000 --lr-step 5600 --score object-x-iou
eic-build eval-baseline "$TEST" --out "$EVAL" --checkpoint "$RUN/last.pt" --method selective-search \
    --scales auto --scale-nms 0.7 --box-voting 0.7
