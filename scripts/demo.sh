#!/usr/bin/env bash
# The whole chain on the simulated rig: record -> calibrate -> sync -> build-dataset ->
# pretrain -> finetune -> evaluate. Everything lands in one folder (default: demo/).
set -euo pipefail
D=${1:-demo}
rm -rf "$D"; mkdir -p "$D"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The close-range rig (a D405-like sensor, 7-50 cm, focus 0.1-0.5 m): where defocus is strong.
PRESET=${PRESET:-d405}
say "record a session on the simulated rig (virtual $PRESET-like sensor + virtual Galaxy S7)"
dfdcap record --sensor sim --phone "${PHONE:-sim}" --sensor-preset "$PRESET" -o "$D/sessions" --name demo --stacks 6
S=$(ls -d "$D"/sessions/*_demo)

say "render calibration boards seen by both cameras, then calibrate"
dfdcap sim checkerboard "$D/boards" --views 20 --board 9x6 --square 0.025 --sensor-preset "$PRESET"
dfdcap calibrate "$D/boards" --board 9x6 --square 0.025 -o "$D/calibration.json"
dfdcap report "$D/calibration.json" -o "$D/calibration.png"

say "fit the phone and sensor clocks and pair the frames"
dfdcap sync "$S"
dfdcap report "$S" -o "$D/sync.png"

say "build the dataset: depth in the phone's view, focus stacks, CoC maps"
dfdcap build-dataset "$S" --calib "$D/calibration.json" -o "$D/dataset.h5"
dfdcap report "$D/dataset.h5" -o "$D/dataset.png"

say "pretrain PoolNet on synthetic focus stacks, fine-tune on the dataset, evaluate"
dfdcap pretrain --model poolnet --steps 300 --size 64 -o "$D/pretrained.pt"
dfdcap finetune --model poolnet --init "$D/pretrained.pt" --data "$D/dataset.h5" -o "$D/runs/poolnet" --epochs 2
dfdcap evaluate "$D/runs/poolnet/best.pt" --data "$D/dataset.h5"
dfdcap report "$D/runs/poolnet" -o "$D/training.png"

say "done: pictures in $D/*.png"
