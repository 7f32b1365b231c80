"""Helpers of the fault-injection tests: snapshots of folders, one-line error checks, tmpfs mounts,
and a tiny synced simulated session with a calibration, a dataset and a run folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths` (a missing path counts as absent): equal snapshots =
    nothing written, nothing changed, nothing left behind (temporary files included)."""
    snap: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for p in files:
            snap[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        if root.is_dir():
            for d in root.rglob("*"):
                if d.is_dir():
                    snap.setdefault(str(d) + "/", "dir")
    return snap


def assert_one_line_error(result: tuple[int, str, str], code: int = 1, *needles: str) -> str:
    """Exit `code`, no traceback, one message line ("error: ..." / "interrupted: ...") and it is
    stderr's last line (a progress bar's last frame may stand before it); returns it."""
    rc, out, err = result
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, f"exit {rc}, expected {code}: {out}{err}"
    messages = [ln for ln in lines if ln.startswith(("error:", "interrupted"))]
    assert len(messages) == 1 and lines[-1] == messages[0], f"expected one message line, got: {err!r}"
    for n in needles:
        assert n.lower() in messages[0].lower(), (n, messages[0])
    return messages[0]


def assert_usage_error(result: tuple[int, str, str]) -> None:
    rc, out, err = result
    assert rc == 2, f"exit {rc}: {out}{err}"
    assert "Traceback" not in out + err
    assert "Error" in err or "error" in err


@contextlib.contextmanager
def tmpfs(size: str = "64k", read_only_copy_of: Path | None = None) -> Iterator[Path]:
    """A fresh tmpfs of `size` (disk full on demand); with read_only_copy_of, a copy of that folder
    on a tmpfs remounted read-only. Skips where mounting is not permitted."""
    mnt = Path(tempfile.mkdtemp(prefix="dfdcap-tmpfs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True).returncode:
        mnt.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): disk-full/read-only cases skipped")
    try:
        if read_only_copy_of is not None:
            dst = mnt / read_only_copy_of.name
            shutil.copytree(read_only_copy_of, dst) if read_only_copy_of.is_dir() else shutil.copy2(read_only_copy_of, dst)
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def default_sigint() -> None:
    """Popen's preexec_fn for a child that a test sends SIGINT: Ctrl-C's default action restored.

    A shell starts background jobs (`make test-loaded &`, nohup, some CI runners) with SIGINT
    ignored; children inherit that, Python then installs no KeyboardInterrupt handler, and the
    child would rightly run on after the test's SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def dfdcap_process(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m dfdcap.cli ARGS` as a child process (stdout/stderr piped), this checkout's code,
    with Ctrl-C's default action (default_sigint)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "dfdcap.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Poll until `condition()` holds (no fixed sleep that a loaded host could outrun); fails if the
    process ends first. The only bound is generous (10 min): it ends a hung test, never decides one."""
    deadline = time.monotonic() + 600
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (exit {proc.returncode}) before {what}: {out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after 10 minutes")
        time.sleep(0.05)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """communicate() with a generous guard (10 min): a process that never ends fails the test
    instead of hanging the suite; the guard never decides a test that works."""
    try:
        return proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not end within 10 minutes of the signal: {out}{err}")


def csv_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def calibration_from_truth(session: Path) -> dict:
    """A calibration file (DESIGN.md format) holding the simulated rig's true cameras and pose."""
    from dfdcap.fileio import read_json

    rig = read_json(session / "truth" / "rig.json")
    cam = lambda c: dict(rig[c], rms_px=0.1, std={}, per_view_px=[0.1], view_names=["v0"])  # noqa: E731
    return {
        "schema": 1, "board": {"type": "checkerboard", "cols": 9, "rows": 6, "square_m": 0.025},
        "phone": cam("phone"), "sensor": cam("sensor"),
        "stereo": {"rms_px": 0.1, "per_view_px": [[0.1, 0.1]], "views_used": ["v0"], "views_dropped": []},
        "T_phone_from_sensor": rig["T_phone_from_sensor"], "versions": {},
    }
