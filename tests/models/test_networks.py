import pytest
import torch
from torch.utils.data import default_collate

from dfdcap.errors import ModelError
from dfdcap.models.losses import dff_loss, diopter_l1, masked_mse
from dfdcap.models.registry import TINY_CONFIGS, build_model, has_coc, model_names

NO_COC_OPTION = ("poolnet-coc", "fvnet")  # always with CoC / never
COC_VARIANTS = [(n, False) for n in model_names() if n != "poolnet-coc"] + [(n, True) for n in model_names() if n != "fvnet"]


def _cfg(name: str, coc: bool) -> dict:
    cfg = dict(TINY_CONFIGS[name])
    if name not in NO_COC_OPTION:
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
            if "confidence" in out:
                assert out["confidence"].shape == (2, 1, 36, 44)
                assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()

    def test_bad_input_shape(self):
        model = build_model("poolnet", **TINY_CONFIGS["poolnet"])
        with pytest.raises(ModelError, match="B x S x 3"):
            model(torch.rand(2, 3, 32, 32), torch.ones(2, 3))
        with pytest.raises(ModelError, match="focus_m"):
            model(torch.rand(2, 3, 3, 32, 32), torch.ones(2, 4))


class TestPermutationInvariance:
    @pytest.mark.parametrize("name", model_names())
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
        assert d_perm < 1e-5
        assert d_label > 10 * max(d_perm, 1e-7)  # the depth does depend on which frame has which focus
        for key in a:
            if key == "coc":  # per-frame CoC maps follow their frames
                assert torch.allclose(a["coc"][:, perm], b["coc"], atol=1e-5)
            else:
                assert torch.allclose(a[key], b[key], atol=1e-5), key


class TestPoolNetGradient:
    """The decoded stack context must reach every frame's score through a nonlinearity: with a
    plain sum the softmax over frames cancelled it (decoder and deeper encoder levels got
    ~1e-8 of the first level's gradient)."""

    @pytest.mark.parametrize("name", ["poolnet", "poolnet-coc"])
    def test_every_level_gets_gradient(self, name):
        torch.manual_seed(0)
        model = build_model(name, **TINY_CONFIGS[name])
        net = model.depth_net if name == "poolnet-coc" else model
        stack = torch.rand(2, 4, 3, 32, 32)
        focus = torch.tensor([[0.2, 0.3, 0.5, 0.9]] * 2)
        model(stack, focus)["depth"].log().sum().backward()
        grads = {n: p.grad.abs().max().item() for n, p in net.named_parameters()
                 if p.dim() == 4 and (n.startswith("encoder.inp.") or n.startswith("decoder."))}
        first = grads["encoder.inp.0.0.weight"]
        levels = [n for n in grads if n.startswith("encoder.inp.")]
        assert len(levels) == 3 and any(n.startswith("decoder.") for n in grads)
        weak = {n: g for n, g in grads.items() if g < 1e-3 * first}
        assert not weak, f"{name}: layers without gradient (first level {first:.2e}): {weak}"


def _constant_loss(batch: dict) -> float:
    """The loss of the trivial predictor: the batch's mean depth everywhere."""
    mean = batch["depth_m"][batch["mask"]].mean()
    return dff_loss({"depth": torch.full_like(batch["depth_m"], float(mean))}, batch)[1]["depth"].item()


@pytest.mark.slow
class TestLearning:
    """60 Adam steps (lr 1e-2) on four 32x32 synthetic stacks: the diopter-position loss on
    them must drop and end below half the constant mean-depth predictor's."""

    @pytest.mark.parametrize("name", model_names())
    def test_beats_constant_predictor(self, name, sim_items):
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
        model.eval()
        with torch.no_grad():
            last = dff_loss(model(batch["stack"], batch["focus_m"]), batch)[1]["depth"].item()
        const = _constant_loss(batch)
        print(f"{name}: loss {first:.4f} -> {last:.4f}; constant predictor {const:.4f}")
        assert last < first and last < 0.5 * const, f"{name}: loss {first:.4f} -> {last:.4f}, constant {const:.4f}"


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
                 "coc_px": torch.zeros(1, 3, 1, 2, 2), "focus_m": torch.tensor([[0.5, 1.0, 2.0]])}
        out = {"depth": torch.full((1, 1, 2, 2), 2.0), "coc": torch.full((1, 3, 1, 2, 2), 3.0)}
        total, parts = dff_loss(out, batch, coc_weight=0.1)
        # sweep 0.5-2 D: 1 m is at (1 - 0.5) / 1.5, 2 m at 0
        assert parts["depth"].item() == pytest.approx(1 / 3)
        assert parts["coc"].item() == pytest.approx(9.0)
        assert total.item() == pytest.approx(1 / 3 + 0.9)

    def test_diopter_l1_clamps_target_to_the_sweep(self):
        focus = torch.tensor([[0.25, 0.5, 1.0]])  # 1-4 D
        gt = torch.tensor([0.2, 0.5, 2.0, float("nan")]).view(1, 1, 2, 2)  # 5 D and 0.5 D lie outside
        pred = torch.full((1, 1, 2, 2), 0.5)  # 2 D: position 1/3
        mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
        # targets (clamped): 1, 1/3, 0; NaN skipped
        assert diopter_l1(pred, gt, mask, focus).item() == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
        # with reach 0.1 (0.3 D past each end): 5 D -> position 1.1, 0.5 D -> -0.1 (capped there, not at the sweep)
        assert diopter_l1(pred, gt, mask, focus, reach=0.1).item() == pytest.approx((1.1 - 1 / 3 + 0 + 1 / 3 + 0.1) / 3)


class TestRegistry:
    def test_unknown_model(self):
        with pytest.raises(ModelError, match="unknown model 'unet'"):
            build_model("unet")

    def test_bad_option(self):
        with pytest.raises(ModelError, match="bad config"):
            build_model("poolnet", depth=3)

    @pytest.mark.parametrize("width", [0, -4])
    def test_width_that_builds_no_layer(self, width):
        """torch builds a 0-channel conv and fails only at the first step; a negative one raises RuntimeError."""
        with pytest.raises(ModelError, match="bad config"):
            build_model("fvnet", width=width)


class TestFVNetEnds:
    """end_margin: expected positions within the margin of a sweep end read as that end's focus."""

    FOCUS = torch.tensor([[0.5, 1.0, 2.0]])  # 2, 1, 0.5 D: positions 1, 1/3, 0 in the 0.5-2 D sweep

    def _depth(self, margin: float, probs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        from dfdcap.models.fvnet import FVNet

        net = FVNet(width=4, end_margin=margin)
        logits = torch.log(torch.tensor(probs).clamp_min(1e-12)).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
        logits.requires_grad_(True)
        net.scores = lambda x, u: logits  # frames sorted by focus: 0.5 m (2 D), 1 m, 2 m (0.5 D)
        out = net(torch.rand(1, 3, 3, 2, 2), self.FOCUS)
        return out["depth"], logits

    def test_positions_near_an_end_read_as_the_end(self):
        # weights 0.1 / 0.9 on the 1 m and 2 m frames: position 0.9 * 0 + 0.1 * 1/3 = 1/30, inside the margin 0.05
        d, _ = self._depth(0.05, [0.0, 0.1, 0.9])
        assert torch.allclose(d, torch.full_like(d, 2.0))
        d0, _ = self._depth(0.0, [0.0, 0.1, 0.9])  # without a margin: a little nearer than the last frame
        assert torch.allclose(d0, torch.full_like(d0, 1 / (0.5 + 1.5 / 30)))
        # in between, positions are stretched about the middle: 0.5 -> 0.5, 1/3 -> (1/3 - 0.05) / 0.9
        d, _ = self._depth(0.05, [0.0, 1.0, 0.0])
        assert torch.allclose(d, torch.full_like(d, 1 / (0.5 + 1.5 * (1 / 3 - 0.05) / 0.9)))
        d, _ = self._depth(0.05, [1.0, 0.0, 0.0])
        assert torch.allclose(d, torch.full_like(d, 0.5))

    def test_a_clamped_pixel_still_gets_gradient(self):
        d, logits = self._depth(0.05, [0.0, 0.1, 0.9])
        d.sum().backward()
        assert logits.grad is not None and float(logits.grad.abs().sum()) > 0

    def test_margin_out_of_range(self):
        with pytest.raises(ModelError, match="end_margin"):
            build_model("fvnet", end_margin=0.3)


class TestFVNetReach:
    """reach: two more softmax bins, reach x the swept diopter span beyond each end (far: at most 2x the last focus)."""

    FOCUS = torch.tensor([[2.0, 0.5, 1.0]])  # unsorted; sorted: 0.5 m (2 D), 1 m, 2 m (0.5 D); span 1.5 D

    def _net(self, reach: float, near_bias: float, far_bias: float):
        from dfdcap.models.fvnet import FVNet

        torch.manual_seed(0)
        net = FVNet(width=4, reach=reach).eval()
        with torch.no_grad():
            net.beyond.bias.copy_(torch.tensor([near_bias, far_bias]))
        return net

    def test_extra_bins_reach_past_either_end(self):
        stack = torch.rand(1, 3, 3, 16, 16)
        with torch.no_grad():
            far = self._net(0.1, -1e4, 1e4)(stack, self.FOCUS)["depth"]
            near = self._net(0.1, 1e4, -1e4)(stack, self.FOCUS)["depth"]
            capped = self._net(0.2, -1e4, 1e4)(stack, self.FOCUS)["depth"]  # 0.5 - 0.3 D < half of 0.5 D
        assert torch.allclose(far, torch.full_like(far, 1 / (0.5 - 0.15)), rtol=1e-4)  # 2.86 m, past the 2 m end
        assert torch.allclose(near, torch.full_like(near, 1 / (2.0 + 0.15)), rtol=1e-4)  # 0.465 m, before 0.5 m
        assert torch.allclose(capped, torch.full_like(capped, 4.0), rtol=1e-4)  # twice the farthest focus

    def test_closed_extra_bins_give_the_plain_network(self):
        """With the extra bins' scores far below their end frames', the output is the reach-0 network's."""
        from dfdcap.models.fvnet import FVNet

        torch.manual_seed(0)
        plain = FVNet(width=4).eval()
        net = self._net(0.2, -1e4, -1e4)
        net.load_state_dict(plain.state_dict(), strict=False)
        stack = torch.rand(1, 3, 3, 16, 16)
        with torch.no_grad():
            a, b = plain(stack, self.FOCUS), net(stack, self.FOCUS)
        assert torch.allclose(a["depth"], b["depth"], rtol=1e-5) and torch.allclose(a["confidence"], b["confidence"])

    def test_permuted_frames_same_depth(self):
        net = self._net(0.2, 0.0, 0.0)
        torch.nn.init.normal_(net.beyond.weight, std=0.5)
        stack, perm = torch.rand(1, 3, 3, 16, 16), torch.tensor([2, 0, 1])
        with torch.no_grad():
            a, b = net(stack, self.FOCUS)["depth"], net(stack[:, perm], self.FOCUS[:, perm])["depth"]
        assert torch.allclose(a, b, rtol=1e-5)

    @pytest.mark.parametrize("cfg, match", [({"reach": 0.6}, "reach"), ({"reach": -0.1}, "reach"),
                                            ({"reach": 0.2, "end_margin": 0.1}, "exclude"), ({"reach": "abc"}, "numbers")])
    def test_bad_reach(self, cfg, match):
        with pytest.raises(ModelError, match=match):
            build_model("fvnet", **cfg)
