#!/usr/bin/env bash
# The whole chain on the simulated rig: record three sessions (each its own scene) -> calibrate ->
# sync -> build-dataset (one session each for train, val and test) -> fine-tune the shipped fvnet
# (checkpoint chosen on val) -> evaluate the shipped and the fine-tuned network beside the
# classical baseline on the held-out test session. Everything lands in one folder (default: demo/).
set -euo pipefail
D=${1:-demo}
rm -rf "$D"; mkdir -p "$D"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The close-range rig (a D405-like sensor, 7-50 cm, focus 0.1-0.5 m): where defocus is strong.
PRESET=${PRESET:-d405}
say "record three sessions on the simulated rig (virtual $PRESET-like sensor + virtual Galaxy S7), a scene each"
for spec in "train 5 0" "val 3 1" "test 3 2"; do
    read -r name stacks seed <<< "$spec"
    dfdcap record --sensor sim --phone "${PHONE:-sim}" --sensor-preset "$PRESET" -o "$D/sessions" --name "$name" \
        --stacks "$stacks" --seed "$seed"
done
VAL=$(basename "$(ls -d "$D"/sessions/*_val)")
TEST=$(basename "$(ls -d "$D"/sessions/*_test)")

say "render calibration boards seen by both cameras, then calibrate"
dfdcap sim checkerboard "$D/boards" --views 16 --board 9x6 --square 0.025 --sensor-preset "$PRESET"
dfdcap calibrate "$D/boards" --board 9x6 --square 0.025 -o "$D/calibration.json"
dfdcap report "$D/calibration.json" -o "$D/calibration.png"

say "fit the phone and sensor clocks and pair the frames, per session"
for s in "$D"/sessions/*; do dfdcap sync "$s"; done
dfdcap report "$(ls -d "$D"/sessions/*_train)" -o "$D/sync.png"

say "build the dataset: session $VAL is the val split, $TEST the held-out test split"
dfdcap build-dataset "$D"/sessions/* --calib "$D/calibration.json" --val "$VAL" --test "$TEST" -o "$D/dataset.h5"
dfdcap report "$D/dataset.h5" -o "$D/dataset.png"

say "fine-tune the shipped fvnet on the train session (the checkpoint is chosen on the val session)"
dfdcap finetune --init fvnet --data "$D/dataset.h5" -o "$D/runs/fvnet" --epochs 3
dfdcap report "$D/runs/fvnet" -o "$D/training.png"

say "held-out test session: shipped fvnet, fine-tuned fvnet and the classical baseline"
dfdcap evaluate fvnet "$D/runs/fvnet/best.pt" --data "$D/dataset.h5" --split test --json "$D/evaluation.json"

say "done: pictures in $D/*.png, metrics in $D/evaluation.json"
