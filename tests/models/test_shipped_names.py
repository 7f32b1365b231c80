"""Shipped checkpoints by name: resolve_checkpoint and the CLI commands that take a MODEL."""

from pathlib import Path

import pytest

from dfdcap.errors import ModelError
from dfdcap.models import shipped
from dfdcap.models.checkpoint import load_checkpoint, save_checkpoint
from dfdcap.models.registry import TINY_CONFIGS, build_model


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A package weights folder holding one tiny checkpoint called `tiny`."""
    d = tmp_path / "weights"
    d.mkdir()
    save_checkpoint(d / "tiny.pt", "poolnet", TINY_CONFIGS["poolnet"], build_model("poolnet", **TINY_CONFIGS["poolnet"]))
    (d / "tiny.json").write_text("{}")
    monkeypatch.setattr(shipped, "_weights_dir", lambda: d)
    return d


class TestResolveCheckpoint:
    def test_existing_path_wins(self, weights_dir, tmp_path, monkeypatch):
        local = tmp_path / "tiny"  # a local file with a shipped model's name
        local.write_bytes(b"x")
        monkeypatch.chdir(tmp_path)
        assert shipped.resolve_checkpoint("tiny") == Path("tiny")
        assert shipped.resolve_checkpoint(local) == local

    def test_name_maps_into_the_package(self, weights_dir):
        assert shipped.resolve_checkpoint("tiny") == weights_dir / "tiny.pt"
        assert shipped.resolve_checkpoint("tiny.pt") == weights_dir / "tiny.pt"
        model, ckpt = load_checkpoint(shipped.resolve_checkpoint("tiny"))
        assert ckpt["model"] == "poolnet"
        assert shipped.shipped_names() == ["tiny"]

    def test_unknown_lists_shipped_names(self, weights_dir):
        with pytest.raises(ModelError) as e:
            shipped.resolve_checkpoint("nonet")
        msg = str(e.value)
        assert "nonet" in msg and "shipped: tiny" in msg and "\n" not in msg
        with pytest.raises(ModelError, match="no such checkpoint"):
            shipped.resolve_checkpoint("runs/missing/best.pt")

    def test_none_shipped_says_so(self, tmp_path, monkeypatch):
        monkeypatch.setattr(shipped, "_weights_dir", lambda: tmp_path / "absent")
        assert shipped.shipped_names() == []
        with pytest.raises(ModelError, match="none in this install"):
            shipped.resolve_checkpoint("fvnet")

    def test_cli_predict_and_evaluate_take_a_name(self, weights_dir, cli, h5_dataset, tmp_path):
        code, out, err = cli("evaluate", "tiny", "--data", h5_dataset, "--max-samples", "1")
        assert code == 0, err
        assert "poolnet (shipped)" in out and "scoring split 'val'" in out
        code, out, err = cli("evaluate", "nonet", "--data", h5_dataset)
        assert code == 1 and "shipped: tiny" in err


def test_real_shipped_fvnet_loads():
    """The package's own fvnet weights (skipped until they are shipped)."""
    path = shipped.shipped_path("fvnet")
    if path is None:
        pytest.skip("dfdcap/models/weights/fvnet.pt is not shipped in this checkout")
    model, ckpt = load_checkpoint(shipped.resolve_checkpoint("fvnet"))
    assert ckpt["model"] == "fvnet" and path.stat().st_size < 8e6
