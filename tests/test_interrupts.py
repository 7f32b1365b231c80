"""CtrlCFlag: a Ctrl-C that a finalizer swallowed still stops the loop that checks the flag."""

import os
import signal
import sys

import pytest

from dfdcap.interrupts import CtrlCFlag


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

    monkeypatch.setattr(cli, "app", command)
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 130
    out, err = capsys.readouterr()
    assert "interrupted" in out + err and "Traceback" not in out + err and "Exception ignored" not in out + err
