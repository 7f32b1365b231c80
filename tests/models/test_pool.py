import torch
from torch.utils.data import default_collate

from dfdcap.models.pool import AugmentedPool, render_pool, shuffle_frames, subsample_keep_ends


def test_pool_is_seeded_and_augmented_draws_keep_depth_with_stack():
    a = render_pool(2, 32, 6, seed=5, workers=1)
    b = render_pool(2, 32, 6, seed=5, workers=1)
    assert a[0]["stack"].dtype == torch.uint8 and a[0]["stack"].shape == (6, 3, 32, 32)
    assert all(torch.equal(x["stack"], y["stack"]) for x, y in zip(a, b))
    ds = AugmentedPool(a, crop=24, length=8, seed=1)
    item = ds[3]
    assert item["stack"].shape == (6, 3, 24, 24) and item["depth_m"].shape == (1, 24, 24)
    assert torch.equal(ds[3]["stack"], item["stack"])  # a draw is reproducible
    assert item["mask"].all() and (item["stack"] >= 0).all() and (item["stack"] <= 1).all()
    # the crop's depths are depths of the rendered scene (rotation/flip only move them)
    src = torch.cat([x["depth_m"].ravel() for x in a])
    assert torch.isin(item["depth_m"].ravel(), src).all()


def test_subsets_keep_end_frames_and_shuffle_keeps_pairs():
    batch = {"stack": torch.arange(7.0).view(1, 7, 1, 1, 1).expand(2, 7, 3, 4, 4),
             "focus_m": torch.arange(7.0).view(1, 7).expand(2, 7) + 1}
    gen = torch.Generator().manual_seed(0)
    for k in (2, 3, 5):
        sub = subsample_keep_ends(batch, k, gen)
        f = sub["focus_m"][0]
        assert len(f) == k and f[0] == 1 and f[-1] == 7
    sh = shuffle_frames(default_collate([{"stack": batch["stack"][0], "focus_m": batch["focus_m"][0]}]), gen)
    assert torch.equal(sh["stack"][0, :, 0, 0, 0] + 1, sh["focus_m"][0])
    assert sorted(sh["focus_m"][0].tolist()) == list(range(1, 8))
