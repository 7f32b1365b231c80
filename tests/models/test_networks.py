import pytest
import torch
from torch.utils.data import default_collate

from dfdcap.errors import ModelError
from dfdcap.models.losses import dff_loss, masked_mse
from dfdcap.models.registry import TINY_CONFIGS, build_model, has_coc, model_names

COC_VARIANTS = [(n, False) for n in model_names() if n != "poolnet-coc"] + [(n, True) for n in model_names()]


def _cfg(name: str, coc: bool) -> dict:
    cfg = dict(TINY_CONFIGS[name])
    if name != "poolnet-coc":
        cfg["coc"] = coc
    return cfg


class TestShapes:
    @pytest.mark.parametrize("name,coc", COC_VARIANTS)
    def test_any_stack_length(self, name, coc):
        torch.manual_seed(0)
        model = build_model(name, **_cfg(name, coc)).eval()
        assert has_coc(model) == coc
        for s in (3, 4, 5):
            # 36 x 44 is not a multiple of the encoders' strides: the networks pad and crop
            stack = torch.rand(2, s, 3, 36, 44)
            focus = torch.linspace(0.1, 0.6, s).repeat(2, 1)
            with torch.no_grad():
                out = model(stack, focus)
            assert out["depth"].shape == (2, 1, 36, 44)
            assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()
            if coc:
                assert out["coc"].shape == (2, s, 1, 36, 44)
                assert (out["coc"] >= 0).all()
            else:
                assert "coc" not in out

    def test_bad_input_shape(self):
        model = build_model("poolnet", **TINY_CONFIGS["poolnet"])
        with pytest.raises(ModelError, match="B x S x 3"):
            model(torch.rand(2, 3, 32, 32), torch.ones(2, 3))
        with pytest.raises(ModelError, match="focus_m"):
            model(torch.rand(2, 3, 3, 32, 32), torch.ones(2, 4))


class TestPermutationInvariance:
    @pytest.mark.parametrize("name", ["poolnet", "poolnet-coc"])
    def test_permuted_stack_same_depth(self, name):
        torch.manual_seed(1)
        model = build_model(name, **TINY_CONFIGS[name]).eval()
        for mod_name, p in model.named_parameters():  # heads start at zero weight: make them non-trivial
            if "head.weight" in mod_name:
                torch.nn.init.normal_(p, std=5.0)
        stack = torch.rand(1, 5, 3, 32, 32)
        focus = torch.tensor([[0.1, 0.15, 0.2, 0.3, 0.5]])
        perm = torch.tensor([3, 0, 4, 2, 1])
        with torch.no_grad():
            a = model(stack, focus)
            b = model(stack[:, perm], focus[:, perm])
            c = model(stack, focus[:, perm])  # frames given the wrong focus distances
        d_perm = (a["depth"] - b["depth"]).abs().max().item()
        d_label = (a["depth"] - c["depth"]).abs().max().item()
        assert d_perm < 1e-6
        assert d_label > 10 * max(d_perm, 1e-7)  # the depth does depend on which frame has which focus
        if "coc" in a:  # per-frame CoC maps follow their frames
            assert torch.allclose(a["coc"][:, perm], b["coc"], atol=1e-5)


class TestLearning:
    """60 Adam steps (lr 1e-2) on four 32x32 synthetic stacks: the training loss on them must
    drop at least 3x (measured when written: ddff 10.3x, lstm-ddff 5.6x, recurrent-ae 18x,
    poolnet 5.2x, poolnet-coc 9.3x)."""

    @pytest.mark.parametrize("name", model_names())
    def test_loss_drops(self, name, sim_items):
        torch.manual_seed(0)
        batch = default_collate(sim_items)
        model = build_model(name, **TINY_CONFIGS[name])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        with torch.no_grad():
            first = dff_loss(model(batch["stack"], batch["focus_m"]), batch)[1]["depth"].item()
        for _ in range(60):
            loss, _ = dff_loss(model(batch["stack"], batch["focus_m"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            last = dff_loss(model(batch["stack"], batch["focus_m"]), batch)[1]["depth"].item()
        print(f"{name}: loss {first:.4f} -> {last:.4f} ({first / last:.1f}x)")
        assert last < first / 3, f"{name}: loss {first:.4f} -> {last:.4f}"


class TestLosses:
    def test_masked_mse_hand_computed(self):
        pred = torch.tensor([[[[1.0, 2.0], [3.0, 10.0]]]])
        gt = torch.tensor([[[[1.0, 1.0], [1.0, float("nan")]]]])
        mask = torch.tensor([[[[True, True, True, True]]]]).view(1, 1, 2, 2)
        # NaN target is skipped: (0 + 1 + 4) / 3
        assert masked_mse(pred, gt, mask).item() == pytest.approx(5 / 3)
        mask[0, 0, 1, 0] = False
        assert masked_mse(pred, gt, mask).item() == pytest.approx(1 / 2)

    def test_empty_mask_is_zero_with_graph(self):
        pred = torch.ones(1, 1, 2, 2, requires_grad=True)
        loss = masked_mse(pred, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
        loss.backward()
        assert loss.item() == 0 and pred.grad is not None

    def test_coc_term_weighted(self):
        batch = {"depth_m": torch.ones(1, 1, 2, 2), "mask": torch.ones(1, 1, 2, 2, dtype=torch.bool),
                 "coc_px": torch.zeros(1, 3, 1, 2, 2)}
        out = {"depth": torch.full((1, 1, 2, 2), 2.0), "coc": torch.full((1, 3, 1, 2, 2), 3.0)}
        total, parts = dff_loss(out, batch, coc_weight=0.1)
        assert parts["depth"].item() == pytest.approx(1.0)
        assert parts["coc"].item() == pytest.approx(9.0)
        assert total.item() == pytest.approx(1.9)


class TestRegistry:
    def test_unknown_model(self):
        with pytest.raises(ModelError, match="unknown model 'unet'"):
            build_model("unet")

    def test_bad_option(self):
        with pytest.raises(ModelError, match="bad config"):
            build_model("poolnet", depth=3)
