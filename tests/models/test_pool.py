import io
import resource
import subprocess
import sys

import torch
from torch.utils.data import default_collate

from dfdcap.models.pool import AugmentedPool, packed, render_pool, shuffle_frames, subsample_keep_ends


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


def _storages(items) -> set[int]:
    return {it[k].untyped_storage().data_ptr() for it in items for k in it}


def test_a_pool_rendered_by_workers_holds_no_descriptor_per_stack():
    """Tensors returned by render workers used to arrive in shared memory, one open file descriptor
    each: 160 stacks (640 tensors) hung under a 256-descriptor limit (600 stacks under the common
    1,024 died with "received 0 items of ancdata"; pretrain's default pool is 512). Loader workers
    started by a fork server (distributed runs) get the pool through shared memory too: one
    tensor per item and key died there with "Too many open files"."""
    code = ("from torch.utils.data import DataLoader\n"
            "from dfdcap.models.pool import AugmentedPool, render_pool\n"
            "if __name__ == '__main__':\n"
            "    items = render_pool(160, 16, 3, seed=2, workers=2)\n"
            "    assert len(items) == 160 and items[-1]['stack'].shape == (3, 3, 16, 16)\n"
            "    dl = DataLoader(AugmentedPool(items, 12, 8, 0), batch_size=4, num_workers=2,\n"
            "                    multiprocessing_context='forkserver')\n"
            "    print('ok', len({it[k].untyped_storage().data_ptr() for it in items for k in it}),\n"
            "          sum(len(b['stack']) for b in dl))")
    def limit() -> None:  # noqa: E306
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, preexec_fn=limit)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.split() == ["ok", "4", "8"]  # one storage per key (stack, focus_m, depth_m, mask); 8 draws


def test_pool_items_are_views_of_one_tensor_per_key_also_after_a_reload():
    items = render_pool(3, 16, 3, seed=1, workers=1)
    assert len(_storages(items)) == 4
    buf = io.BytesIO()
    torch.save({"items": items}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["items"]
    assert len(_storages(loaded)) == 4 and packed(loaded) is loaded
    # a cache written before packing (one tensor per item and key) is packed on load, values kept
    old = [{k: v.clone() for k, v in it.items()} for it in items]
    again = packed(old)
    assert len(_storages(again)) == 4
    assert all(torch.equal(a[k], b[k]) for a, b in zip(again, items) for k in a)
