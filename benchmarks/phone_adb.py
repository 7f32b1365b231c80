"""Phone link through the real adb server and a fake adbd: shell round trip, clock probe, pull.

Peers measured in the same run: `adb shell true` and `adb pull` (the adb CLI, a subprocess
each) against dfdcap's adbutils path (AdbPhone's shell, probe, and verified pull).
The fake phone runs in a child process, so that it does not share the GIL with the client.
Open Camera: the same check for a focus bracket of photos in /sdcard/DCIM/OpenCamera pulled by
dfdcap.capture.opencamera.pull_photos (sha256sum on the phone, each photo verified) against
`adb pull` of that folder; the target is >= 80 % of `adb pull`'s throughput.
Run: python benchmarks/phone_adb.py
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from dfdcap.capture.phone import AdbPhone, SyncConnection, _pull_verified
from dfdcap.sim.adbd import FakeAdbd, PrivateAdbServer
from dfdcap.capture.phone_protocol import APP_PACKAGE, APP_PORT
from dfdcap.sim.companion import CompanionApp


class _StillPhone:
    """Just enough of a SimPhone for hello/time (no frames are recorded here)."""

    def camera(self):
        from dfdcap.capture.session import PhoneCamera

        return PhoneCamera(0.0042, 1.7, (0.005645, 0.004234), (64, 48), 10.0)

    def now_phone_ns(self) -> int:
        return time.monotonic_ns() + 1_000_000_000


def _median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


N_FRAMES, FRAME_BYTES, RID = 25, 1 << 20, "bench_recording"


def _write_recording(root: Path, n: int, nbytes: int) -> None:
    """A recording as the app leaves it: n frames of nbytes, frames.csv with sizes and sha256."""
    from dfdcap.capture.phone_protocol import PHONE_CSV_COLUMNS, format_phone_csv_row, recording_dir
    from dfdcap.capture.session import PhoneCamera, PhoneFrameRecord

    d = root / recording_dir(RID).lstrip("/")
    (d / "frames").mkdir(parents=True)
    (d / "camera.json").write_text(__import__("json").dumps(_StillPhone().camera().to_dict()))
    rows = [",".join(PHONE_CSV_COLUMNS)]
    for i in range(n):
        data = os.urandom(nbytes)
        (d / "frames" / f"{i}.jpg").write_bytes(data)
        rec = PhoneFrameRecord(i, i, 2.0, 2.0, 1, 100, "STATIONARY", i // 5, i % 5, f"frames/{i}.jpg")
        rows.append(format_phone_csv_row(rec, nbytes, hashlib.sha256(data).hexdigest()))
    (d / "frames.csv").write_text("\n".join(rows) + "\n")


OC_NAMES = [f"IMG_20261202_120000_{i}.jpg" for i in range(N_FRAMES)]


def _write_opencamera_photos(root: Path, n: int, nbytes: int) -> None:
    """A bracket as Open Camera leaves it: IMG_<time>_<i>.jpg in DCIM/OpenCamera (random bytes: only the pull is timed)."""
    from dfdcap.capture.opencamera_focus import PHOTO_DIR

    d = root / PHOTO_DIR.lstrip("/")
    d.mkdir(parents=True)
    for name in OC_NAMES[:n]:
        (d / name).write_bytes(os.urandom(nbytes))


def _opencamera_pull_ms(dev, srv, serial: str, tmp: Path, runs: int = 5) -> tuple[float, float]:
    """Median ms of pull_photos (fresh destination each run) and of `adb pull` of the same folder."""
    import shutil

    from dfdcap.capture.opencamera import pull_photos
    from dfdcap.capture.opencamera_focus import PHOTO_DIR

    ours, cli = [], []
    for k in range(runs):
        dest = tmp / f"oc_{k}"
        t = time.perf_counter()
        with SyncConnection(dev, "bench") as sync:
            _ = pull_photos(dev, sync, OC_NAMES, [FRAME_BYTES] * N_FRAMES, dest, 0, "bench")
        ours.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        srv.adb_cmd("-s", serial, "pull", PHOTO_DIR, str(tmp / f"cli_oc_{k}"))
        cli.append((time.perf_counter() - t) * 1e3)
        assert (dest / "3.jpg").read_bytes() == (tmp / f"cli_oc_{k}" / OC_NAMES[3]).read_bytes()
        shutil.rmtree(dest)
        shutil.rmtree(tmp / f"cli_oc_{k}")
    return statistics.median(ours), statistics.median(cli)


def _phone_process(root: str, size: int, conn) -> None:
    """The fake phone (adbd + companion app) in its own process; sends its port, waits for 'stop'."""
    app = CompanionApp(_StillPhone(), root)
    adbd = FakeAdbd(root, network={APP_PORT: app.start()}, packages={APP_PACKAGE: None})
    p = adbd.device_path("/sdcard/bench.bin")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(os.urandom(size))
    _write_recording(Path(root), N_FRAMES, FRAME_BYTES)
    _write_opencamera_photos(Path(root), N_FRAMES, FRAME_BYTES)
    conn.send((adbd.start(), hashlib.sha256(p.read_bytes()).hexdigest()))
    conn.recv()
    adbd.close()
    app.close()


def main() -> None:
    size = 16 << 20
    remote = "/sdcard/bench.bin"
    parent, child = mp.Pipe()
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as tmp, PrivateAdbServer() as srv:
        proc = mp.get_context("spawn").Process(target=_phone_process, args=(root, size, child))
        proc.start()
        try:
            port, sha = parent.recv()
            serial = srv.connect(f"127.0.0.1:{port}")
            with AdbPhone(serial, adb_port=srv.port) as phone:
                dev = phone._device
                ours_shell = _median_ms(lambda: dev.shell("true"), 30)
                cli_shell = _median_ms(lambda: srv.adb_cmd("-s", serial, "shell", "true"), 10)
                probe = _median_ms(phone.probe, 200)
                dest = Path(tmp) / "x.bin"
                with SyncConnection(dev, "bench") as sync:
                    ours_pull = _median_ms(lambda: _pull_verified(sync, remote, dest, size, sha, "bench"), 5)
                cli_pull = _median_ms(lambda: srv.adb_cmd("-s", serial, "pull", remote, str(Path(tmp) / "y.bin")), 5)
                assert dest.read_bytes() == (Path(tmp) / "y.bin").read_bytes()
                from dfdcap.capture.phone import pull_recording
                from dfdcap.capture.phone_protocol import recording_dir
                from dfdcap.capture.session import DeviceInfo, SessionWriter

                w = SessionWriter.create(tmp, "bench", DeviceInfo("-", "-", "-"), phone.info)
                t = time.perf_counter()
                res = pull_recording(dev, recording_dir(RID), w, "bench", delete=False, progress=False)
                rec_pull = (time.perf_counter() - t) * 1e3
                t = time.perf_counter()
                srv.adb_cmd("-s", serial, "pull", recording_dir(RID), str(Path(tmp) / "cli_rec"))
                cli_rec = (time.perf_counter() - t) * 1e3
                assert res.pulled == N_FRAMES
                oc_pull, cli_oc = _opencamera_pull_ms(dev, srv, serial, Path(tmp))
        finally:
            parent.send("stop")
            proc.join(10)
    mib = size / (1 << 20)
    rec_mib = N_FRAMES * FRAME_BYTES / (1 << 20)
    print(f"recording pull ({N_FRAMES} frames x {FRAME_BYTES >> 20} MiB, frames.csv checked by sha256sum on the phone, "
          f"every frame verified): {rec_pull:.0f} ms = {rec_mib / rec_pull * 1e3:.0f} MiB/s; `adb pull` of the folder "
          f"{cli_rec:.0f} ms (ratio ours/CLI time {rec_pull / cli_rec:.2f})")
    print(f"Open Camera bracket pull ({N_FRAMES} photos x {FRAME_BYTES >> 20} MiB, sha256sum on the phone, each verified): "
          f"{oc_pull:.0f} ms = {rec_mib / oc_pull * 1e3:.0f} MiB/s; `adb pull` of the folder {cli_oc:.0f} ms = "
          f"{rec_mib / cli_oc * 1e3:.0f} MiB/s (throughput ours/CLI {cli_oc / oc_pull:.2f}, target >= 0.80)")
    print(f"shell round trip: adbutils {ours_shell:.1f} ms, `adb shell true` CLI {cli_shell:.1f} ms "
          f"(ratio ours/CLI {ours_shell / cli_shell:.2f})")
    print(f"clock probe (JSON `time` over adb forward): {probe:.2f} ms round trip")
    print(f"pull {mib:.0f} MiB verified (sha256): {ours_pull:.0f} ms = {mib / ours_pull * 1e3:.0f} MiB/s; "
          f"`adb pull` CLI {cli_pull:.0f} ms = {mib / cli_pull * 1e3:.0f} MiB/s (ratio ours/CLI time {ours_pull / cli_pull:.2f})")


if __name__ == "__main__":
    main()
