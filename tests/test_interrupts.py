"""CtrlCFlag: a Ctrl-C that a finalizer swallowed still stops the loop that checks the flag."""

import os
import signal
import sys

import pytest

from dfdcap.interrupts import CtrlCFlag, raise_if_pressed


class _FailingFinalizer:
    def __del__(self) -> None:
        raise ValueError("a finalizer's own error")


class _CtrlCInFinalizer:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is raised here and ignored


def test_a_swallowed_ctrl_c_is_kept_and_not_printed(monkeypatch):
    """A KeyboardInterrupt raised in a finalizer is swallowed; Python printed "Exception ignored in ...
    Traceback" under finetune's one-line message (one loaded run). The flag keeps it, nothing is
    printed, and other errors in finalizers are still reported."""
    printed = []
    hook = lambda u: printed.append(u.exc_type)  # noqa: E731
    monkeypatch.setattr(sys, "unraisablehook", hook)
    before = signal.getsignal(signal.SIGINT)
    with CtrlCFlag() as flag:
        assert flag.installed
        flag.check()  # no Ctrl-C yet: nothing raised
        _CtrlCInFinalizer()  # deleted at once: the KeyboardInterrupt is raised inside __del__ and swallowed
        assert printed == []
        with pytest.raises(KeyboardInterrupt):
            flag.check()
        _FailingFinalizer()
        assert printed == [ValueError]
    assert signal.getsignal(signal.SIGINT) is before
    assert sys.unraisablehook is hook  # the previous hook is back


def test_a_ctrl_c_caught_by_an_enclosing_flag_is_seen_by_the_loop(monkeypatch):
    """The CLI's flag caught a Ctrl-C during a command's imports and a finalizer swallowed its
    KeyboardInterrupt; the render loop's own flag, installed after, must still stop (sim checkerboard
    rendered all its views and exited 0, 1 loaded run in 12)."""
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
    with CtrlCFlag() as outer:
        _CtrlCInFinalizer()
        with CtrlCFlag() as inner:
            assert not inner.hit.is_set() and inner.pressed
            with pytest.raises(KeyboardInterrupt):
                inner.check()
    with CtrlCFlag() as later:  # a flag outlives no block: nothing is left pressed
        assert not later.pressed
    assert outer.pressed


def test_not_installed_where_ctrl_c_is_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
    try:
        with CtrlCFlag() as flag:
            assert not flag.installed and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_cli_exits_130_after_a_swallowed_ctrl_c(monkeypatch, capsys):
    """A command whose Ctrl-C a finalizer swallowed runs on to its end; dfdcap then still says
    "interrupted" and exits 130, and prints no "Exception ignored ... Traceback"."""
    import dfdcap.cli as cli

    def command(**kw) -> int:
        _CtrlCInFinalizer()
        return 0

    monkeypatch.setattr(cli, "command", lambda: command)
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 130
    out, err = capsys.readouterr()
    assert "interrupted" in out + err and "Traceback" not in out + err and "Exception ignored" not in out + err


def test_loops_without_a_flag_of_their_own_stop_at_their_next_item(monkeypatch, tmp_path):
    """calibrate's board detection has no flag of its own: after a Ctrl-C that the CLI's flag caught
    and a finalizer swallowed, it stops at its next image instead of detecting them all."""
    from dfdcap.calib.boards import Board, detect_files

    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
    raise_if_pressed()  # no flag installed, nothing pressed
    items = [(f"v{i}", tmp_path / f"v{i}.png") for i in range(4)]
    for _, path in items:
        path.write_bytes(b"not a picture")  # unreadable: each one fails fast
    done = []
    with CtrlCFlag():
        detect_files(items, Board("checkerboard", 9, 6, 0.025), workers=1, on_done=lambda: done.append(1))
        assert len(done) == 4  # nothing pressed: every image was tried
        _CtrlCInFinalizer()
        with pytest.raises(KeyboardInterrupt):
            detect_files(items, Board("checkerboard", 9, 6, 0.025), workers=1, on_done=lambda: done.append(1))
    assert len(done) == 4
    raise_if_pressed()  # the flag is gone: nothing is left pressed
