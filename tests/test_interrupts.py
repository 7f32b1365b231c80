"""CtrlCFlag: a Ctrl-C that a finalizer swallowed still stops the loop that checks the flag."""

import os
import signal
import sys

import pytest

from dfdcap.interrupts import CtrlCFlag


class _CtrlCInFinalizer:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is raised here and ignored


def test_a_swallowed_ctrl_c_is_kept_and_the_handler_restored(monkeypatch):
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    before = signal.getsignal(signal.SIGINT)
    with CtrlCFlag() as flag:
        assert flag.installed
        flag.check()  # no Ctrl-C yet: nothing raised
        _CtrlCInFinalizer()  # deleted at once: Python reports "Exception ignored in ..." and goes on
        assert swallowed == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            flag.check()
    assert signal.getsignal(signal.SIGINT) is before


def test_not_installed_where_ctrl_c_is_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
    try:
        with CtrlCFlag() as flag:
            assert not flag.installed and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
