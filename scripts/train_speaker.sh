#!/usr/bin/env bash
# Train, evaluate and export the speaker-ID ResNet (not shipped; exported beside the run).
#
#   scripts/train_speaker.sh [CORPUS] [RUN_DIR]
#
# CORPUS defaults to /work/corpora/speakers, made by
#   lrp-onnx data synth -o /work/corpora/speakers --kind speaker --seed 0
# Split: held-out utterances of every training speaker (70% train, 10% validation, 20% test).
# ResNet34 layout (BasicBlocks [3, 4, 6, 3]) at width 16 with a stride-2 stem so that it trains
# on 2 CPU cores; mean pooling over time, 128-d Linear + BatchNorm1d embedding. Adam, lr 1e-3.
# Safe to re-run: an interrupted run continues (--resume) from its last finished epoch.
set -euo pipefail
CORPUS=${1:-/work/corpora/speakers}
RUN=${2:-/work/runs/speaker_resnet}
EPOCHS=${EPOCHS:-15}
THREADS=${THREADS:-1}  # on a busy shared CPU one thread ran ~3x faster than two (no OpenMP barrier stalls)

args=(train resnet --data "$CORPUS" --task speaker -o "$RUN" --epochs "$EPOCHS"
      --batch-size 32 --lr "${LR:-1e-3}" --seed 0 --split utterance --test-fraction 0.2 --val-fraction 0.1
      --width "${WIDTH:-16}" --stem-stride 2 --embedding-dim 128 --pooling mean --threads "$THREADS")
if [ -f "$RUN/last.pt" ]; then args+=(--resume); fi
nice -n 5 lrp-onnx "${args[@]}"
lrp-onnx export "$RUN" -o "${OUTPUT:-$RUN/speaker_resnet.onnx}"
