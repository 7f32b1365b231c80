"""Ctrl-C that a long loop cannot lose."""

from __future__ import annotations


class CtrlCFlag:
    """Ctrl-C raises KeyboardInterrupt and also sets `hit`, which a long loop checks (check()):
    Python raises the KeyboardInterrupt wherever the main thread is, and in a finalizer or a callback
    that swallows exceptions it is lost (sim checkerboard: 1 loaded run in 12 rendered all its views
    and exited 0; training went on). Installed only in the main thread, and not where Ctrl-C is
    ignored (nohup, a background job): `installed` says whether it was. restore(), or the end of a
    `with CtrlCFlag() as flag:` block, puts the previous handler back."""

    def __init__(self) -> None:
        import signal
        import threading

        self.hit = threading.Event()
        self.handler = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is not signal.SIG_IGN:
                self.handler = handler
                signal.signal(signal.SIGINT, self._on_sigint)

    def __enter__(self) -> "CtrlCFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _on_sigint(self, signum, frame) -> None:
        self.hit.set()
        raise KeyboardInterrupt

    @property
    def installed(self) -> bool:
        return self.handler is not None

    def check(self) -> None:
        if self.hit.is_set():
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        if self.handler is not None:
            signal.signal(signal.SIGINT, self.handler)
            self.handler = None
