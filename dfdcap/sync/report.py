"""`dfdcap report SESSION`: a PNG of the clock fits, their residuals and the pairing gaps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfdcap.errors import DfdcapError, SyncError
from dfdcap.fileio import atomic_path, read_json


RECORDED = ("sensor", "phone", "clock", "truth")  # a session's subfolders that hold what was recorded


def write_sync_report(session_dir: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Fit the session's clocks (with the settings of its sync.json, if any) and plot them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dfdcap.capture.session import Session
    from dfdcap.sync.io import compute_sync, previous_settings

    session_dir, png = Path(session_dir), Path(png)
    try:  # a PNG among the recorded frames (sensor/depth/<t>.png) would replace one of them
        part = png.resolve().relative_to(session_dir.resolve()).parts[0]
    except (ValueError, IndexError):
        part = None
    if part in RECORDED:
        raise SyncError(f"{png}: the report PNG would be written among the session's recorded data ({part}/), "
                        f"where it could replace a frame; write it beside session.json or elsewhere")
    try:
        session = Session(session_dir)
    except DfdcapError as e:
        raise SyncError(str(e)) from None
    mode, max_gap, latency = "many-to-one", None, None
    if (session_dir / "sync.json").is_file():
        path = session_dir / "sync.json"
        mode, max_gap, latency = previous_settings(read_json(path), path)
    doc, pfit, sfit = compute_sync(session, mode, max_gap, latency)

    fig, ax = plt.subplots(2, 2, figsize=(13, 8.5))
    verdicts = ", ".join(f"{k} {v['verdict']}" for k, v in doc["quality"].items())
    suspect = any(v["verdict"] != "ok" for v in doc["quality"].values())
    fig.suptitle(f"clock sync: {session.name} ({verdicts})", fontsize=12, color="darkorange" if suspect else "black")

    # phone: each probe bounds host(t_phone) to [send, recv]; plot the bounds about the model
    probes = session.probes()
    pm = pfit.model
    tp = probes[:, 1]
    t_s = (tp - tp[0]) / 1e9
    model_host = pm.to_host_ns(tp)
    lo = (probes[:, 0] - model_host) / 1e6
    hi = (probes[:, 2] - model_host) / 1e6
    a = ax[0, 0]
    a.vlines(t_s, lo, hi, color="0.75", lw=1, label="probe bounds [send, recv]")
    a.plot(t_s, (lo + hi) / 2, ".", ms=3, color="tab:blue", label="midpoints")
    a.plot(t_s[pfit.used], ((lo + hi) / 2)[pfit.used], "o", mfc="none", color="tab:red", ms=6, label="binding probes")
    a.axhline(0, color="k", lw=1)
    lim = max(3.0, float(np.percentile(np.abs(np.r_[lo, hi]), 90)) * 1.3)
    a.set_ylim(-lim, lim)
    a.set_xlabel("phone time since first probe (s)")
    a.set_ylabel("host - model (ms)")
    a.set_title(f"phone: drift {pm.drift_ppm:+.2f} ± {pm.drift_std_ppm:.2f} ppm, offset std {pm.offset_std_ns / 1e3:.1f} µs "
                f"({pm.extra.get('method', '').split(':')[0]})", fontsize=9)
    a.legend(fontsize=8, loc="upper right")

    # sensor: arrival minus the model (capture) = latency; envelope at the fixed latency
    sm = sfit.model
    td = np.array([r.t_device_ns for r in session.sensor_frames], dtype=np.int64)
    th = np.array([r.t_host_ns for r in session.sensor_frames], dtype=np.int64)
    lat_ms = (th - sm.to_host_ns(td)) / 1e6
    a = ax[0, 1]
    a.plot((td - td[0]) / 1e9, lat_ms, ".", ms=2, color="tab:green", label="arrival - model")
    a.axhline(sm.extra.get("latency_ns", 0) / 1e6, color="k", lw=1, label="lower envelope")
    top = max(2.0, float(np.percentile(lat_ms, 90)) * 1.5)
    a.set_ylim(min(-0.5, float(lat_ms.min()) - 0.5), top)
    n_off = int((lat_ms > top).sum())
    if n_off:
        a.text(0.01, 0.97, f"{n_off} frames above {top:.1f} ms (max {lat_ms.max():.1f} ms) not shown",
               transform=a.transAxes, fontsize=8, va="top")
    a.set_xlabel("sensor device time since first frame (s)")
    a.set_ylabel("latency above model (ms)")
    a.set_title(f"sensor: drift {sm.drift_ppm:+.2f} ± {sm.drift_std_ppm:.2f} ppm (data alone "
                f"{sm.extra.get('drift_data_ppm', sm.drift_ppm):+.1f})\nmedian latency above envelope "
                f"{sm.extra.get('latency_above_envelope_median_ns', 0) / 1e6:.2f} ms", fontsize=9)
    a.legend(fontsize=8, loc="upper right")

    # gaps
    pairs = doc["pairs"]
    gaps = np.array([p["gap_ns"] for p in pairs if p["gap_ns"] is not None], dtype=np.float64) / 1e6
    mg = doc["association"]["max_gap_ns"] / 1e6
    a = ax[1, 0]
    a.hist(gaps, bins=np.linspace(-mg, mg, 41), color="tab:purple")
    a.axvline(-mg, color="k", ls="--", lw=1)
    a.axvline(mg, color="k", ls="--", lw=1, label=f"max gap ±{mg:.1f} ms")
    st = doc["stats"]
    a.set_xlabel("sensor - phone host time (ms)")
    a.set_ylabel("phone frames")
    a.set_title(f"pairing ({doc['association']['mode']}): {st['n_matched']}/{st['n_phone_frames']} matched, "
                f"{st['n_unmatched']} unmatched", fontsize=9)
    a.legend(fontsize=8)

    # per frame, by stack
    a = ax[1, 1]
    idx = np.array([p["phone_index"] for p in pairs])
    ramp = np.array([p["ramp"] for p in pairs])
    g = np.array([np.nan if p["gap_ns"] is None else p["gap_ns"] / 1e6 for p in pairs])
    a.scatter(idx, g, c=ramp % 10, s=8, cmap="tab10", vmin=0, vmax=9)
    un = np.isnan(g)
    if un.any():
        a.plot(idx[un], np.zeros(un.sum()), "x", color="red", label="unmatched")
        a.legend(fontsize=8)
    a.axhline(mg, color="k", ls="--", lw=1)
    a.axhline(-mg, color="k", ls="--", lw=1)
    a.set_xlabel("phone frame index")
    a.set_ylabel("gap (ms)")
    a.set_title("gap per phone frame (colour = stack / ramp)", fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return png
