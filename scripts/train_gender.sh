#!/usr/bin/env bash
# Train, evaluate and export the shipped gender AlexNet (models/gender_alexnet.onnx).
#
#   scripts/train_gender.sh [CORPUS] [RUN_DIR]
#
# CORPUS defaults to /work/corpora/digits, made by
#   lrp-onnx data synth /work/corpora/digits --kind digits --speakers 60 --female 30 --reps 20 --seed 0
# Split: held-out base voices (25% test, 15% validation per gender; test voices are never heard
# in training). The study's recipe where it fits 2 CPU cores: Adam, lr 1e-4, batch 32, a
# fresh random 2000 of the 7000 training utterances per epoch (each with a fresh random padding
# offset), validation on a balanced 400 of the validation voices, test on all test voices.
# Safe to re-run: an interrupted run continues (--resume) from its last finished epoch.
set -euo pipefail
CORPUS=${1:-/work/corpora/digits}
RUN=${2:-/work/runs/gender_alexnet}
EPOCHS=${EPOCHS:-7}
THREADS=${THREADS:-2}

args=(train alexnet --data "$CORPUS" --task gender --out "$RUN" --epochs "$EPOCHS"
      --batch-size 32 --lr 1e-4 --seed 0 --split voice --test-fraction 0.25 --val-fraction 0.15
      --epoch-size "${EPOCH_SIZE:-2000}" --val-limit "${VAL_LIMIT:-400}" --threads "$THREADS")
if [ -f "$RUN/last.pt" ]; then args+=(--resume); fi
nice -n 5 lrp-onnx "${args[@]}"
lrp-onnx export "$RUN" -o "${OUTPUT:-$(dirname "$0")/../models/gender_alexnet.onnx}"
