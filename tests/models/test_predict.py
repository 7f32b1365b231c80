"""predict: --classical, --focus / --diopters / --index, --scale / --size, tiles that match the whole image."""

from pathlib import Path

import numpy as np
import pytest

from dfdcap.errors import ModelError
from dfdcap.fileio import read_image, write_image
from dfdcap.models.baseline import best_focus_index, classical_dff, focus_measure, to_gray
from dfdcap.models.checkpoint import save_checkpoint
from dfdcap.models.predict import focus_coordinates, predict, predict_depth, run_tiled, tile_windows
from dfdcap.models.registry import TINY_CONFIGS, build_model
from dfdcap.sim.render import random_focus_stack

PCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "focal_stack_pcb" / "sweep10"


@pytest.fixture(scope="module")
def stack_files(tmp_path_factory):
    """Five synthetic 48x64 frames as PNGs, their focus distances (metres) and the stack."""
    d = tmp_path_factory.mktemp("stack")
    s = random_focus_stack(np.random.default_rng(4), (48, 64), 5)
    paths = []
    for i, fr in enumerate(s["stack"]):
        paths.append(d / f"f{i}.png")
        write_image(paths[-1], fr)
    return paths, [float(v) for v in s["focus_m"]], s["stack"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "tiny.pt"
    return save_checkpoint(p, "poolnet", TINY_CONFIGS["poolnet"], build_model("poolnet", **TINY_CONFIGS["poolnet"]))


def _csv(vals):
    return ",".join(f"{v:.6f}" for v in vals)


class TestClassicalThroughPredict:
    def test_focus_metres(self, cli, stack_files, tmp_path):
        paths, focus, stack = stack_files
        code, out, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "-o", tmp_path / "c.png", "--no-align")
        assert code == 0, err
        mm = read_image(tmp_path / "c_mm.png", unchanged=True)
        want = classical_dff(stack, np.array([float(f"{v:.6f}") for v in focus]))
        assert np.abs(mm.astype(float) - want * 1000).max() <= 0.51
        assert "1 tile(s)" in out and "64x48" in out

    def test_diopters_same_as_metres(self, stack_files, tmp_path):
        paths, focus, _ = stack_files
        a = predict(None, paths, focus_coordinates(5, focus=_csv(focus)), tmp_path / "a.png")
        b = predict(None, paths, focus_coordinates(5, diopters=_csv([1 / f for f in focus])), tmp_path / "b.png")
        np.testing.assert_allclose(a.depth_m, b.depth_m, rtol=1e-5)

    def test_index_is_the_best_focus_frame(self, stack_files, tmp_path):
        paths, _, stack = stack_files
        r = predict(None, paths, focus_coordinates(5, index=True), tmp_path / "i.png", align=False)
        want = best_focus_index(np.stack([focus_measure(g) for g in to_gray(stack)]))
        assert r.unit == "index"
        np.testing.assert_allclose(r.depth_m, want, atol=1e-3)
        u16 = read_image(tmp_path / "i_index.png", unchanged=True)
        assert u16.dtype == np.uint16 and np.abs(u16 / 65535 * 4 - want).max() < 1e-3

    @pytest.mark.parametrize("name, colour", [("d.jpg", "d.jpg"), ("d.JPEG", "d.JPEG"), ("d", "d.png")])
    def test_output_takes_the_asked_picture_format(self, cli, stack_files, tmp_path, name, colour):
        """-o x.jpg writes a JPEG colour picture (it wrote x.png before); the data stay a 16-bit PNG."""
        paths, focus, _ = stack_files
        code, out, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "-o", tmp_path / name, "--no-align")
        assert code == 0, err
        pic = (tmp_path / colour).read_bytes()
        assert pic[:2] == b"\xff\xd8" if colour.lower().endswith((".jpg", ".jpeg")) else pic[:4] == b"\x89PNG"
        assert read_image(tmp_path / "d_mm.png", unchanged=True).dtype == np.uint16
        assert str(tmp_path / colour) in out.replace("\n", "")

    def test_other_picture_formats_refused(self, cli, stack_files, tmp_path):
        """-o d.tif wrote d.png without a word: the user looked for a file that was not there."""
        paths, focus, _ = stack_files
        code, out, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "-o", tmp_path / "d.tif")
        assert code == 1 and "d.tif" in err and ".png or .jpg" in err
        assert list(tmp_path.glob("d*")) == []

    def test_output_folder_refused(self, cli, stack_files, tmp_path):
        """-o results/ (a folder) wrote results.png and results_mm.png beside the folder, exit 0."""
        paths, focus, _ = stack_files
        (tmp_path / "results").mkdir()
        code, out, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "-o", f"{tmp_path / 'results'}/")
        assert code == 1 and "results: is a folder" in err and "results/depth.png" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and not any((tmp_path / "results").iterdir())

    def test_exactly_one_focus_option(self, cli, stack_files):
        paths, focus, _ = stack_files
        code, _, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "--index")
        assert code == 1 and "exactly one of --focus" in err
        code, _, err = cli("predict", "--classical", *paths, "--diopters", "1,2,0,4,5")
        assert code == 1 and "--diopters" in err

    def test_one_focus_per_image(self, cli, stack_files, tmp_path):
        paths, focus, _ = stack_files
        code, _, err = cli("predict", "--classical", *paths, "--focus", "0.5", "-o", tmp_path / "f.png")
        assert code == 1 and "5 images but 1 --focus values" in err and "comma-separated" in err
        code, _, err = cli("predict", "--classical", *paths, "--focus", "0.5,0.5,0.5,0.5,0.5", "-o", tmp_path / "f.png")
        assert code == 1 and "same focus" in err
        code, _, err = cli("predict", "--classical", *paths, "--focus", "0.1,0.2,0.3,0.4,0_5", "-o", tmp_path / "f.png")
        assert code == 1 and "expected comma-separated distances in metres" in err  # float() read 0_5 as 5 m
        assert not list(tmp_path.iterdir())

    @pytest.mark.parametrize("model", ["fvnet", "run/best.pt"])
    def test_classical_with_a_model_says_to_drop_it(self, cli, stack_files, tmp_path, model):
        paths, focus, _ = stack_files
        code, _, err = cli("predict", "--classical", model, *paths, "--index", "-o", tmp_path / "c.png")
        assert code == 1 and "--classical takes only the stack's images" in err and model in err
        assert not list(tmp_path.iterdir())

    @pytest.mark.parametrize("tile", ["1", "31", "-5"])
    def test_tile_too_small_is_refused_before_the_work(self, cli, stack_files, tmp_path, tile):
        """A 1-pixel tile would mean a tile per pixel (hours on one 12 MP frame): refused at once."""
        paths, focus, _ = stack_files
        code, _, err = cli("predict", "--classical", *paths, "--focus", _csv(focus), "--tile", tile, "-o", tmp_path / "t.png")
        assert code == 1 and "--tile" in err and "at least 32" in err
        assert not list(tmp_path.iterdir())


class TestPredictInputs:
    def test_pattern_that_matched_nothing_is_named(self, cli, stack_files, tmp_path):
        """An unmatched shell pattern reached predict as it was typed: "a focus stack needs at least 2 images"."""
        paths, _, _ = stack_files
        code, _out, err = cli("predict", "--classical", paths[0], str(tmp_path / "x*.png"), "--index", "-o", tmp_path / "d.png")
        assert code == 1 and "x*.png: no such image file" in " ".join(err.split())

    def test_failed_run_leaves_no_new_folders(self, cli, stack_files, tmp_path):
        """-o into folders that do not exist yet: a run that fails must not leave them behind, empty."""
        paths, _, _ = stack_files
        (tmp_path / "notes.txt").write_text("not an image")
        code, _out, err = cli("predict", "--classical", paths[0], tmp_path / "notes.txt", "--index",
                              "-o", tmp_path / "new" / "sub" / "d.png")
        assert code == 1 and "notes.txt" in err
        assert not (tmp_path / "new").exists()


class TestNetworkThroughPredict:
    def test_index_with_a_network(self, cli, tiny_ckpt, stack_files, tmp_path):
        paths, _, _ = stack_files
        code, out, err = cli("predict", tiny_ckpt, *paths, "--index", "-o", tmp_path / "n.png")
        assert code == 0, err
        assert (tmp_path / "n_index.png").is_file() and "best-focus frame index" in out

    def test_scale_and_size(self, tiny_ckpt, stack_files, tmp_path):
        paths, focus, _ = stack_files
        r = predict(tiny_ckpt, paths, focus, tmp_path / "s.png", scale=0.5)
        assert r.size == (32, 24) and r.depth_m.shape == (24, 32)
        r = predict(tiny_ckpt, paths, focus, tmp_path / "s.png", size="40")
        assert r.size == (40, 30) and read_image(tmp_path / "s_mm.png", unchanged=True).shape == (30, 40)
        with pytest.raises(ModelError, match="at most 4x the 64x48 images"):  # not a 30 GB resize
            predict(tiny_ckpt, paths, focus, tmp_path / "s.png", size="99999x99999")


class TestTiles:
    def test_windows_partition_the_image(self):
        cover = np.zeros((100, 130), int)
        for wy, wx, cy, cx in tile_windows(100, 130, 32, 8):
            cover[wy, wx][cy, cx] += 1
            assert wy.stop - wy.start <= 32 + 16
        assert (cover == 1).all()
        assert len(tile_windows(100, 130, 0, 8)) == 1 and len(tile_windows(100, 130, 200, 8)) == 1

    def test_classical_tiled_equals_whole(self, stack_files):
        _, focus, _ = stack_files
        rng = np.random.default_rng(2)
        big = np.concatenate([random_focus_stack(rng, (96, 160), 5)["stack"] for _ in range(2)], axis=1)  # 5x192x160
        method = lambda st: classical_dff(st, np.array(focus))  # noqa: E731
        whole, n1 = run_tiled(method, big, tile=0)
        tiled, n = run_tiled(method, big, tile=48, margin=16)  # reach of the measure: 1 + 4 px < 16
        assert n1 == 1 and n == 16
        np.testing.assert_allclose(tiled, whole, rtol=1e-6)

    def test_network_tiled_close_to_whole(self, tiny_ckpt):
        from dfdcap.models.checkpoint import load_checkpoint

        s = random_focus_stack(np.random.default_rng(3), (128, 128), 5)
        model, _ = load_checkpoint(tiny_ckpt)
        method = lambda st: predict_depth(model, st, list(s["focus_m"]))  # noqa: E731
        whole, _ = run_tiled(method, s["stack"], tile=0)
        tiled, n = run_tiled(method, s["stack"], tile=64, margin=32)
        assert n == 4
        assert np.median(np.abs(tiled - whole)) < 0.02 * np.median(whole)


@pytest.mark.skipif(not PCB.is_dir(), reason="shared PCB focal sweep not present")
def test_real_pcb_sweep_classical_index(cli, tmp_path):
    """The real 2048x1536 sweep (focus unknown): --index at 512 px wide gives a depth order, not a flat map."""
    frames = sorted(PCB.glob("*.JPG"))
    code, out, err = cli("predict", "--classical", *frames, "--index", "--size", "512", "-o", tmp_path / "pcb.png")
    assert code == 0, err
    idx = read_image(tmp_path / "pcb_index.png", unchanged=True) / 65535 * (len(frames) - 1)
    assert idx.shape == (384, 512)
    assert np.percentile(idx, 95) - np.percentile(idx, 5) > 3  # several frames deep, not one plane


@pytest.mark.parametrize("copy", [False, True], ids=["one file twice", "a copy"])
def test_a_repeated_frame_is_refused(cli, stack_files, tmp_path, copy):
    """`predict fvnet a.png a.png b.png` ran and wrote a depth map: a repeated frame only pulls the
    depth toward its focus. Same file or same pixels: one line naming it, nothing written."""
    paths, _, _ = stack_files
    again = paths[1]
    if copy:
        again = tmp_path / "copy.png"
        again.write_bytes(paths[1].read_bytes())
    out = tmp_path / "d.png"
    code, stdout, err = cli("predict", "--classical", paths[0], paths[1], again, "--index", "-o", out)
    assert code == 1 and "Traceback" not in stdout + err
    what = f"holds the same pixels as {paths[1]}" if copy else "is given twice"
    assert err.strip() == f"error: {again}: {what}; the frames of a focus stack are focused at different distances"
    assert not out.exists() and not (tmp_path / "d_index.png").exists()


def test_a_frame_that_cannot_be_registered_is_named(cli, stack_files, tmp_path):
    """predict registers the frames to the middle one first; one that fails (here a black frame) is
    used as it is, which was silent. Now a warning names it; the depth is still written."""
    paths, _, _ = stack_files
    black = tmp_path / "black.png"
    write_image(black, np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / "d.png"
    code, stdout, err = cli("predict", "--classical", paths[0], paths[2], black, "--index", "-o", out)
    assert code == 0, stdout + err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {black}: not registered to the middle frame ("), err
    assert warnings[0].endswith("); used as it is")
    assert out.exists() and (tmp_path / "d_index.png").exists()


def test_a_repeated_focus_value_is_a_warning(cli, stack_files, tmp_path):
    """`--focus 0.1,0.2,0.2,0.3` (a typo for 0.25?) ran without a word. A lens clamped at the end of its
    range does repeat its focus, so it is a warning naming both frames, not an error."""
    paths, focus, _ = stack_files
    given = [focus[0], focus[1], focus[1]]
    out = tmp_path / "d.png"
    code, stdout, err = cli("predict", "--classical", paths[0], paths[1], paths[2], "--focus", _csv(given), "-o", out, "--no-align")
    assert code == 0, stdout + err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {paths[1]} and {paths[2]} are given the same focus ({float(f'{focus[1]:.6f}'):g} m): a typo? "
                        "(a lens held at the end of its range does repeat its focus)"], err
    assert out.exists()
