#!/usr/bin/env bash
# Train, evaluate and export the shipped gender AlexNet (models/gender_alexnet.onnx) on real and
# synthetic speech.
#
#   scripts/train_gender.sh [SYNTH_CORPUS] [REAL_SPEECH] [RUN_DIR]
#
# SYNTH_CORPUS defaults to /work/corpora/digits-small, made by
#   lrp-onnx data synth -o /work/corpora/digits-small --kind digits --speakers 60 --female 30 --reps 8 \
#       --seed 0 --sample-rate 16000
# REAL_SPEECH defaults to ../shared/real-speech/librispeech-train beside the checkout (163 LibriSpeech
# speakers, CC BY 4.0; never copied into the repository).
# Splits: real speakers by speaker (20 % test, 15 % validation per gender), synthetic by base voice;
# test and validation speakers/voices are never heard in training. Each epoch: a fresh random 3000
# training windows (real: random 1 s speech windows; synthetic: random padding), augmented
# (microphone EQ, band limits, source rates, telephone band, reverb, noise, level, DC, clipping; see
# models/augmentation.py). 30 epochs; model selection (the best epoch) on validation only. Safe to
# re-run: an interrupted run continues (--resume) from its last finished epoch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SYNTH=${1:-/work/corpora/digits-small}
REAL=${2:-$HERE/../../shared/real-speech/librispeech-train}
RUN=${3:-/work/runs/gender_real}
EPOCHS=${EPOCHS:-30}
THREADS=${THREADS:-2}

args=(train alexnet --data "$SYNTH:$REAL" --task gender -o "$RUN" --epochs "$EPOCHS"
      --batch-size 32 --lr 1e-4 --seed 0 --test-fraction 0.2 --val-fraction 0.15
      --epoch-size "${EPOCH_SIZE:-3000}" --val-limit "${VAL_LIMIT:-300}" --threads "$THREADS" --no-progress)
if [ -f "$RUN/last.pt" ]; then args+=(--resume); fi
lrp-onnx "${args[@]}"
OUT=${OUTPUT:-$HERE/../models/gender_alexnet.onnx}
lrp-onnx export "$RUN" -o "$OUT"
python -m lrp_onnx.study.real_speech "$OUT" "$RUN" "$RUN/real_speech"
