"""Usage errors of every command: `dfdcap X --bogus` exits 2 with click's message and no traceback.

The commands are enumerated from the Typer app (sub-apps included), so a new command is covered
without editing this file.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import typer

from dfdcap.cli import app


def _command_paths(t: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for info in t.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        paths.append(prefix + (name,))
    for group in t.registered_groups:
        paths.append(prefix + (group.name,))
        paths += _command_paths(group.typer_instance, prefix + (group.name,))
    return paths


COMMANDS = _command_paths(app)


def test_the_enumeration_finds_the_commands():
    names = {" ".join(p) for p in COMMANDS}
    assert {"record", "calibrate", "sync", "associate", "build-dataset", "finetune", "evaluate", "predict",
            "report", "sim", "sim checkerboard"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_bogus_option_is_a_usage_error(cli, path):
    rc, out, err = cli(*path, "--bogus")
    assert rc == 2, out + err
    assert "Traceback" not in out + err
    assert "--bogus" in err and "No such option" in err


@pytest.mark.parametrize("args", [[], ["nosuchcommand"], ["sync"], ["record", "--stacks", "abc"], ["sim", "nosuch"],
                                  ["record", "--seed", "-1", "-o", "/nonexistent/s"],
                                  ["sim", "checkerboard", "/nonexistent/b", "--seed", "-1"],
                                  ["pretrain", "--model", "fvnet", "--seed", "-1", "-o", "/nonexistent/p.pt"]],
                         ids=["no arguments", "unknown command", "missing argument", "bad number", "unknown sub-command",
                              "negative seed: record", "negative seed: sim", "negative seed: pretrain"])
def test_other_usage_errors(cli, args):
    rc, out, err = cli(*args)
    assert rc == 2, out + err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("args", [["record", "--stacks", "1_0"], ["record", "--fps", "1_0"], ["record", "--near", "0_2"],
                                  ["sim", "checkerboard", "b", "--square", "0_025"], ["pretrain", "--lr", "1_0"],
                                  ["associate", "a.txt", "b.txt", "--max-difference", "0_1"]],  # option, value last
                         ids=["int", "float", "distance", "sub-command", "learning rate", "seconds"])
def test_numbers_with_underscores_are_usage_errors(cli, tmp_path, monkeypatch, args):
    """int() and float() read "1_0" as 10: `record --stacks 1_0` recorded 10 stacks and `--fps 1_0`
    10 frames/s without a word. Every int and float option now refuses it, before anything runs."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(*args)
    assert rc == 2 and "Traceback" not in out + err, out + err
    option = args[-2]
    assert f"'{option}'" in err and "is not a number (no underscores in numbers)" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["predict", "fvnet", "a.png", "b.png", "--index", "--size", "2_40", "-o", "d.png"], "--size: expected WxH or W in pixels, got '2_40'"),
    (["calibrate", ".", "--charuco", "7x5,0.0_4,0.03"], "square and marker sizes must be numbers"),
    (["pretrain", "--model", "fvnet", "-o", "p.pt", "--devices", "1_0"], "--devices '1_0': expected auto"),
    (["pretrain", "--model", "fvnet", "-o", "p.pt", "--devices", "0,1_0"], "--devices '0,1_0': expected auto"),
], ids=["predict size", "charuco square", "device count", "device ids"])
def test_values_parsed_from_text_refuse_underscores(cli, tmp_path, monkeypatch, args, message):
    """Values the commands parse from text themselves: `predict --size 2_40` ran at 240 px wide,
    `--devices 1_0` asked for 10 devices."""
    monkeypatch.chdir(tmp_path)
    for grey, name in enumerate(("a.png", "b.png")):
        cv2.imwrite(str(tmp_path / name), np.full((24, 32, 3), 100 + grey, np.uint8))
    before = sorted(tmp_path.iterdir())
    rc, out, err = cli(*args)
    assert rc == 1 and "Traceback" not in out + err, out + err
    assert message in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_underscores_stay_welcome_in_names(cli, tmp_path):
    """The check is on numbers only: a file name with underscores reaches the command."""
    rc, out, err = cli("associate", tmp_path / "rgb_stamps.txt", tmp_path / "depth_stamps.txt", "--max-difference", "0.02")
    assert rc == 1 and "rgb_stamps.txt" in err and "Invalid value" not in err, err


def test_out_of_memory_is_one_line(cli, monkeypatch, tmp_path):
    """Sizes or counts beyond the machine (`record --stacks 100000 --steps 100000` asks numpy for
    75 GB) end in one line, not a MemoryError traceback."""
    import dfdcap.capture.recorder as recorder

    def too_big(*a, **k):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)")

    monkeypatch.setattr(recorder, "record_from_specs", too_big)
    rc, out, err = cli("record", "-o", tmp_path)
    assert rc == 1 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("error: out of memory") and "74.5 GiB" in err


def test_torch_out_of_memory_is_one_line(cli, monkeypatch, tmp_path):
    """PyTorch's CPU allocator raises RuntimeError, not MemoryError (`pretrain --batch-size 100000`
    under a memory limit ended in that traceback): the same one line. Here torch really fails to
    allocate 1 PB."""
    import torch

    import dfdcap.models.train as train

    monkeypatch.setattr(train, "pretrain", lambda *a, **k: torch.empty(2**50, dtype=torch.uint8))
    rc, out, err = cli("pretrain", "--model", "poolnet", "-o", tmp_path / "p.pt")
    assert rc == 1 and "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: out of memory") and "can't allocate memory" in last


def test_other_runtime_errors_are_not_called_out_of_memory(cli, monkeypatch, tmp_path):
    import dfdcap.models.train as train

    def bug(*a, **k):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(train, "pretrain", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli("pretrain", "--model", "poolnet", "-o", tmp_path / "p.pt")


def test_paths_with_emoji_codes_are_printed_as_they_are(cli, tmp_path):
    """rich replaced ':smile:' in a printed path by an emoji: 'error: .../😄/x: not a session folder' named a
    folder that does not exist, and the adb port -1 printed as '127.0.0.1👎'. Output is now printed verbatim."""
    folder = tmp_path / ":smile:" / "x"
    rc, out, err = cli("sync", folder)
    assert rc == 1 and f"{folder}: not a session folder" in " ".join(err.split()), err
    rc, out, err = cli("associate", tmp_path / ":thumbs_up:.txt", tmp_path / "b.txt")
    assert rc == 1 and ":thumbs_up:.txt" in err, err
