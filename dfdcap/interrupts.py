"""Ctrl-C that a long loop cannot lose."""

from __future__ import annotations

import signal
import sys
import threading

_INSTALLED: list["CtrlCFlag"] = []  # the flags whose handler is installed, outermost (the CLI's) first


class CtrlCFlag:
    """Ctrl-C raises KeyboardInterrupt and also sets `hit`, which a long loop checks (check()):
    Python raises the KeyboardInterrupt wherever the main thread is, and in a finalizer or a callback
    that swallows exceptions it is lost (sim checkerboard: 1 loaded run in 12 rendered all its views
    and exited 0; training went on). Installed only in the main thread, and not where Ctrl-C is
    ignored (nohup, a background job): `installed` says whether it was. restore(), or the end of a
    `with CtrlCFlag() as flag:` block, puts the previous handler back.

    `pressed` (and check()) also see a Ctrl-C that an enclosing flag caught before this one was
    installed: the CLI holds one for every command, and a Ctrl-C during a command's imports was
    swallowed there (in abc's isinstance check), so the loop's own flag never saw it."""

    def __init__(self) -> None:
        self.hit = threading.Event()
        self.handler = None
        self._unraisable = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is not signal.SIG_IGN:
                self.handler = handler
                self._unraisable = sys.unraisablehook
                sys.unraisablehook = self._on_unraisable
                signal.signal(signal.SIGINT, self._on_sigint)
                _INSTALLED.append(self)

    def __enter__(self) -> "CtrlCFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _on_unraisable(self, unraisable) -> None:
        """A finalizer that swallowed the Ctrl-C printed "Exception ignored in ... Traceback" under the
        one-line message; the flag carries that Ctrl-C, so it is not printed. Anything else still is."""
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and self.pressed:
            return
        (self._unraisable or sys.__unraisablehook__)(unraisable)

    def _on_sigint(self, signum, frame) -> None:
        self.hit.set()
        raise KeyboardInterrupt

    @property
    def installed(self) -> bool:
        return self.handler is not None

    @property
    def pressed(self) -> bool:
        """Ctrl-C since this flag, or an enclosing one, was installed."""
        return self.hit.is_set() or _any_hit()

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.handler is not None:
            signal.signal(signal.SIGINT, self.handler)
            self.handler = None
            _INSTALLED.remove(self)
        if self._unraisable is not None:
            if sys.unraisablehook == self._on_unraisable:  # not replaced since (then leave it)
                sys.unraisablehook = self._unraisable
            self._unraisable = None


def raise_if_pressed() -> None:
    """KeyboardInterrupt if an installed flag (the CLI's, for every command) caught a Ctrl-C: for a
    loop with no flag of its own, checked once an item, so that a Ctrl-C a finalizer swallowed
    stops it there instead of at its end (calibrate's detections, build-dataset's stacks)."""
    if _any_hit():
        raise KeyboardInterrupt


def _any_hit() -> bool:
    """Whether an installed flag caught a Ctrl-C."""
    return any(f.hit.is_set() for f in _INSTALLED)
