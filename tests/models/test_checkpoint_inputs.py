"""Checkpoints and model options with wrong types, out-of-range sizes or non-finite weights:
one-line ModelErrors naming the file or option (fuzz findings)."""

import pytest
import torch
from typer.testing import CliRunner

from dfdcap.cli import app
from dfdcap.errors import ModelError
from dfdcap.models.checkpoint import load_checkpoint, save_checkpoint
from dfdcap.models.registry import build_model


@pytest.fixture
def poolnet_ckpt(tmp_path):
    """A real tiny PoolNet checkpoint as a dict, and a function writing a changed copy to a file."""
    m = build_model("poolnet", width=4, levels=3)
    save_checkpoint(tmp_path / "good.pt", "poolnet", {"width": 4, "levels": 3}, m, {"kind": "test"})
    base = torch.load(tmp_path / "good.pt", weights_only=True)

    def write(name: str, **changes) -> str:
        ck = {**base, **changes}
        path = tmp_path / name
        torch.save(ck, path)
        return str(path)

    return base, write


@pytest.mark.parametrize("key, value, expected", [
    ("config", [4], "'config' is a list, expected a dict"),
    ("state_dict", None, "'state_dict' must map parameter names to tensors"),
    ("meta", "x", "'meta' is a str, expected a dict"),
    ("model", ["fvnet"], "'model' is a list, expected a model name"),
])
def test_wrong_types_are_one_line_errors(poolnet_ckpt, key, value, expected):
    _, write = poolnet_ckpt
    path = write("bad.pt", **{key: value})
    with pytest.raises(ModelError, match=expected) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


@pytest.mark.parametrize("config, expected", [
    ({"width": 4, "levels": -1}, r"option levels=-1 \(expected an integer from 1 to 8\)"),
    ({"width": 4, "levels": 30}, "option levels=30"),
    ({"width": 100000, "levels": 3}, "option width=100000"),
    ({"width": 4, "levels": 3, "bogus": 1}, "unexpected keyword argument 'bogus'"),
])
def test_config_out_of_range_names_the_file(poolnet_ckpt, config, expected):
    _, write = poolnet_ckpt
    path = write("bad.pt", config=config)
    with pytest.raises(ModelError, match=expected) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(path)


def test_model_key_changed_names_the_file(poolnet_ckpt):
    _, write = poolnet_ckpt
    path = write("other.pt", model="fvnet")
    with pytest.raises(ModelError, match="unexpected keyword argument 'levels'") as e:
        load_checkpoint(path)
    assert str(e.value).startswith(path)


@pytest.mark.parametrize("name, cfg", [
    ("poolnet", {"levels": 0}), ("poolnet", {"levels": -1}), ("poolnet", {"levels": 30}),
    ("poolnet", {"width": 4, "levels": True}), ("poolnet-coc", {"width": 600}), ("recurrent-ae", {"levels": 9}),
    ("fvnet", {"width": 10**6}), ("fvnet", {"window": 10**6}), ("ddff", {"width": 1000.0}),
    ("lstm-ddff", {"width": float("nan")}),
])
def test_build_model_bounds_sizes(name, cfg):
    key = next(iter(cfg if len(cfg) == 1 else {"levels": 0}))
    with pytest.raises(ModelError, match=f"option {key}="):
        build_model(name, **cfg)


@pytest.mark.parametrize("opt", ["levels=0", "levels=-1", "levels=30", "width=100000"])
def test_cli_set_out_of_range_before_any_file(tmp_path, opt):
    out = tmp_path / "p.pt"
    res = CliRunner().invoke(app, ["pretrain", "--model", "poolnet", "--set", "width=4", "--set", opt,
                                   "--size", "32", "--steps", "1", "-o", str(out)])
    assert isinstance(res.exception, ModelError) and f"option {opt}" in str(res.exception)
    assert not any(tmp_path.iterdir())


def test_cli_set_refuses_numbers_with_underscores(tmp_path):
    """int() reads "1_6" as 16: `--set width=1_6` built a width-16 network without a word. Text values
    with underscores (names) stay text."""
    from dfdcap.cli import _model_options

    out = tmp_path / "p.pt"
    res = CliRunner().invoke(app, ["pretrain", "--model", "poolnet", "--set", "width=1_6", "--steps", "1", "-o", str(out)])
    assert isinstance(res.exception, ModelError) and "'1_6' is not a number" in str(res.exception)
    assert not any(tmp_path.iterdir())
    assert _model_options(["norm=group_norm", "width=8"]) == {"norm": "group_norm", "width": 8}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_refused(poolnet_ckpt, value):
    base, write = poolnet_ckpt
    sd = {k: (v.clone().fill_(value) if v.is_floating_point() else v) for k, v in base["state_dict"].items()}
    path = write("nan.pt", state_dict=sd)
    with pytest.raises(ModelError, match="holds NaN or inf values") as e:
        load_checkpoint(path)
    assert str(e.value).startswith(path)


def test_cut_short_file(poolnet_ckpt, tmp_path):
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="half.pt: not a readable dfdcap checkpoint .*cut short or damaged"):
        load_checkpoint(tmp_path / "half.pt")


def test_folder_is_not_a_checkpoint(tmp_path):
    (tmp_path / "run.pt").mkdir()
    with pytest.raises(ModelError, match="run.pt: is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "run.pt")


def _overflowing_checkpoint(path) -> None:
    """Finite weights so large that every activation overflows: the network's depth is NaN."""
    m = build_model("poolnet", width=4, levels=3)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1e30)
    save_checkpoint(path, "poolnet", {"width": 4, "levels": 3}, m)


def test_evaluate_refuses_non_finite_network_depth(cli, h5_dataset, tmp_path):
    """It used to replace the NaN predictions and print a table (RMS 2.82) with exit 0."""
    _overflowing_checkpoint(tmp_path / "big.pt")
    code, out, err = cli("evaluate", tmp_path / "big.pt", "--data", h5_dataset, "--json", tmp_path / "m.json")
    assert code == 1 and "depth is NaN or infinite" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_predict_refuses_non_finite_network_depth(cli, sim_items, tmp_path):
    """It used to write an all-zero picture and report 'best-focus frame index nan-nan' with exit 0."""
    from stack_pngs import write_stack_pngs

    _overflowing_checkpoint(tmp_path / "big.pt")
    paths, focus = write_stack_pngs(sim_items[0], tmp_path)
    out = tmp_path / "out" / "depth.png"
    code, _, err = cli("predict", tmp_path / "big.pt", *paths, "--focus", focus, "-o", out, "--no-align")
    assert code == 1 and "big.pt: the network's depth is NaN or infinite" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_batch_size_bounded_before_any_file(cli, h5_dataset, tmp_path, command):
    """--batch-size 100000 got the process OOM-killed and left a run folder behind."""
    args = (["-o", tmp_path / "bs.pt", "--size", "32", "--pool", "4", "--steps", "2"] if command == "pretrain"
            else ["--data", h5_dataset, "-o", tmp_path / "run", "--crop", "32"])
    code, _, err = cli(command, "--model", "poolnet", "--set", "width=4", "--set", "levels=3",
                       "--batch-size", "100000", *args)
    assert code == 1 and "--batch-size 100000: expected 1 to 1024" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("opts, needle", [(["--frames", "100000"], "at most 100 frames"),
                                          (["--pool", "100000000"], "--pool")])
def test_pretrain_pool_bounded_before_any_file(cli, tmp_path, opts, needle):
    """--frames 100000 and --pool 10^8 rendered for minutes into an empty <out>_run/ (or ran out of memory)."""
    code, _, err = cli("pretrain", "--model", "poolnet", "--set", "width=4", "--set", "levels=3", "-o", tmp_path / "p.pt",
                       "--size", "32", "--steps", "2", *opts)
    assert code == 1 and needle in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
