#!/usr/bin/env bash
# Train, evaluate and export the speaker-ID ResNet on real speakers (issue 13; not shipped).
#
#   scripts/train_speaker_real.sh DATA [RUN_DIR]
#
# DATA: a real-speech folder with manifest.csv, one recording per speaker, e.g.
#   /work/shared/real-speech/librispeech-train (163 LibriSpeech speakers, CC BY 4.0).
# Split in time within each recording: the first 60 % trains (random 2 s speech windows,
# drawn anew every epoch), the next 15 % validates (model selection), the last 25 % tests;
# held-out windows start 1 s apart inside their own part, never reaching into another part.
# Accuracy is reported per 2 s window and per held-out part (mean of its windows' logits).
# Features: 64-band log-mel, 2 s, absolute log energies (no per-band mean normalisation).
# Augmentation: level (0..-12 dB), light noise (20-40 dB SNR), rare clipping; no EQ / band limits / reverb.
# Half of the training windows are mosaics of 0.25 s pieces from all over the training part
# (the voice stays, the words are scrambled: without them the model memorised the few training
# sentences, 53 % test accuracy).
# ResNet34 layout at width 8 with a stride-2 stem (CPU), statistics pooling, 128-d embedding.
# Adam, weight decay 1e-4: EPOCHS at lr 1e-3, then FINE_EPOCHS at lr 1e-4 from the best
# (validation) epoch into RUN_DIR/final. Then export to ONNX and pixel-flip held-out windows with
# the paper-resnet composite (LRP vs random order; the AUC ratio is in flip.json).
# Safe to re-run: an interrupted run continues (--resume) from its last finished epoch.
set -euo pipefail
DATA=${1:?usage: scripts/train_speaker_real.sh DATA [RUN_DIR]}
RUN=${2:-/work/runs/speaker_real2}
EPOCHS=${EPOCHS:-40}         # stage 1: lr 1e-3
FINE_EPOCHS=${FINE_EPOCHS:-16}  # stage 2: from stage 1's best epoch, lr 1e-4
THREADS=${THREADS:-1}
FINAL=$RUN/final

common=(--data "$DATA" --task speaker --batch-size 32 --weight-decay 1e-4 --seed 0 --val-fraction 0.15
        --test-fraction 0.25 --width 8 --stem-stride 2 --embedding-dim 128 --pooling stats --threads "$THREADS"
        --no-progress)
resume() { if [ -f "$1/last.pt" ]; then echo --resume; fi; }
lrp-onnx train resnet "${common[@]}" -o "$RUN" --epochs "$EPOCHS" --lr 1e-3 $(resume "$RUN")
lrp-onnx train resnet "${common[@]}" -o "$FINAL" --epochs "$FINE_EPOCHS" --lr 1e-4 --init "$RUN" $(resume "$FINAL")
RUN=$FINAL
lrp-onnx export "$RUN" -o "$RUN/speaker_resnet.onnx"
# the run's held-out test windows (same split, same features) as an .npz for pixel-flipping
python - "$RUN" "$DATA" <<'PY'
import sys
import numpy as np
from lrp_onnx.audio.features import feature_spec_from_json
from lrp_onnx.models import train, training_data
run, data = sys.argv[1:3]
ckpt = train.load_checkpoint(train.run_checkpoint(run, "best"))
cfg = ckpt["config"]
sets = training_data.build_sets(data, "speaker", "resnet", test_fraction=cfg["test_fraction"],
                                val_fraction=cfg["val_fraction"], spec=feature_spec_from_json(ckpt["features"]),
                                progress=False)
assert sets.labels == ckpt["labels"]
x = sets.test.inputs(np.arange(len(sets.test)))
np.savez(f"{run}/test_windows.npz", x=x, y=sets.test.labels, groups=sets.test.groups, labels=np.asarray(sets.labels))
print(f"{run}/test_windows.npz: {len(x)} test windows of {len(np.unique(sets.test.groups))} readers")
PY
lrp-onnx flip "$RUN/speaker_resnet.onnx" "$RUN/test_windows.npz" -o "$RUN/flip.json" --plot "$RUN/flip.png" \
    --threads "$THREADS" --no-progress
