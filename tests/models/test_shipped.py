"""The weights shipped in the package: loadable with weights_only, documented, and better than
the classical baseline on held-out synthetic stacks (FixedSynthetic.TEST_SEED, which no
training run or checkpoint choice saw)."""

import json
from pathlib import Path

import torch

from dfdcap.models.checkpoint import load_checkpoint
from dfdcap.models.data import FixedSynthetic
from dfdcap.models.evaluate import evaluate_items

WEIGHTS = Path(__file__).resolve().parents[2] / "dfdcap" / "models" / "weights"


def test_shipped_fvnet_is_small_and_documented():
    pt, info = WEIGHTS / "fvnet.pt", WEIGHTS / "fvnet.json"
    assert pt.stat().st_size < 2_000_000
    torch.load(pt, map_location="cpu", weights_only=True)
    doc = json.loads(info.read_text())
    assert doc["model"] == "fvnet" and FixedSynthetic.TEST_SEED not in doc["data_seed"]
    assert {"command", "steps", "test_metrics"} <= set(doc)
    _, ckpt = load_checkpoint(pt)
    assert doc["config"] == ckpt["config"] and doc["steps"] == sum(p["steps_done"] for p in doc["phases"])


def test_shipped_fvnet_beats_classical_on_held_out_stacks():
    model, ckpt = load_checkpoint(WEIGHTS / "fvnet.pt", expected_model="fvnet")
    test = FixedSynthetic(4, 64, 5, seed=FixedSynthetic.TEST_SEED)
    metrics, n = evaluate_items({"fvnet": model}, test)
    net, base = metrics["fvnet"], metrics["classical DFF"]
    print(f"fvnet RMS {net['rms']:.4f} delta1 {net['delta1']:.1f}; classical RMS {base['rms']:.4f} delta1 {base['delta1']:.1f}")
    assert n == 4
    assert net["rms"] < base["rms"] and net["delta1"] > base["delta1"]
