"""Quality verdicts of a session's clock fits: "ok", or "suspect" with reasons (pure; no I/O).

A fit can succeed numerically and still be untrustworthy: a drift that the prior (not the data)
decided, an offset uncertain by more than the sync target, too few samples, residuals far beyond
what a USB or ADB link shows, or a session whose indexes are shorter than its session.json says
(a file cut mid-way) or that ended without a clean stop. sync.json stores one verdict per clock,
`{"verdict": "ok" | "suspect", "reasons": [...]}`; `sync` prints suspect ones, `build-dataset`
names suspect sessions. The thresholds below are the numbers the verdicts use.
"""

from __future__ import annotations

from dfdcap.sync.clock import ClockModel

TARGET_NS = 500_000  # sync target: 0.5 ms; a clock whose 1-sigma timing error exceeds it is suspect
MIN_SENSOR_FRAMES = 30  # about 1 s of a 30 fps stream
MIN_PROBES = 8
MAX_DRIFT_PPM = 200.0  # crystal clocks stay well inside this; beyond it the fit or the data is wrong
MAX_SENSOR_LATENCY_NS = 20_000_000  # median arrival latency above the envelope (USB: ~1-5 ms)
MAX_PHONE_RESIDUAL_NS = 5_000_000  # RMS of the best probes' midpoints about the phone fit (ADB: ~1 ms)


def timing_std_ns(m: ClockModel, span_ns: int) -> float:
    """1-sigma error of the mapped time at the ends of a span centred on t0 (offset + drift parts)."""
    return float((m.offset_std_ns**2 + (m.drift_std_ppm * 1e-6 * span_ns / 2.0) ** 2) ** 0.5)


def sensor_reasons(m: ClockModel, span_ns: int) -> list[str]:
    """Why a sensor clock fit (fit.fit_sensor_clock's model) is not to be trusted; [] if it is."""
    e = m.extra
    out = []
    n = int(e.get("n_frames", 0))
    if n < MIN_SENSOR_FRAMES:
        out.append(f"too few sensor frames ({n} < {MIN_SENSOR_FRAMES})")
    prior, data_sd = float(e.get("drift_prior_ppm", float("inf"))), float(e.get("drift_data_std_ppm", 0.0))
    pull = float(e.get("drift_prior_pull_ppm", 0.0))
    if abs(pull) > max(2.0 * data_sd, 5.0):
        out.append(
            f"the drift prior dominates the drift: the data alone say {e.get('drift_data_ppm', 0.0):+.0f} ppm, "
            f"the prior moved it by {pull:+.0f} ppm to {m.drift_ppm:+.1f} ppm (arrival latency changed during the stream?)"
        )
    elif data_sd > prior:
        out.append(
            f"the data do not pin the drift (data-only std {data_sd:.0f} ppm > prior {prior:.0f} ppm): "
            f"{m.drift_ppm:+.1f} ppm is mostly the prior; record longer"
        )
    lat = int(e.get("latency_above_envelope_median_ns", 0))
    if lat > MAX_SENSOR_LATENCY_NS:
        out.append(f"residuals large: median arrival latency {lat / 1e6:.1f} ms above the envelope (> {MAX_SENSOR_LATENCY_NS / 1e6:.0f} ms)")
    return out + _common_reasons(m, span_ns)


def phone_reasons(m: ClockModel, span_ns: int) -> list[str]:
    """Why a phone clock fit (fit.fit_phone_clock's model) is not to be trusted; [] if it is."""
    e = m.extra
    out = []
    n = int(e.get("n_probes", 0))
    if n < MIN_PROBES:
        out.append(f"too few clock probes ({n} < {MIN_PROBES})")
    if e.get("band_inconsistent"):
        out.append("the probes fit no single linear clock (band empty); fell back to the midpoint fit")
    if m.residual_ns > MAX_PHONE_RESIDUAL_NS:
        out.append(f"residuals large: probe midpoints scatter {m.residual_ns / 1e6:.1f} ms RMS about the fit (> {MAX_PHONE_RESIDUAL_NS / 1e6:.0f} ms)")
    return out + _common_reasons(m, span_ns)


def _common_reasons(m: ClockModel, span_ns: int) -> list[str]:
    out = []
    if abs(m.drift_ppm) > MAX_DRIFT_PPM:
        out.append(f"drift {m.drift_ppm:+.0f} ppm beyond what clock crystals do (|drift| <= {MAX_DRIFT_PPM:.0f} ppm)")
    sd = timing_std_ns(m, span_ns)
    if not sd <= TARGET_NS:
        out.append(f"uncertain: timing std {sd / 1e6:.2f} ms over the session (> {TARGET_NS / 1e6:.1f} ms)")
    return out


def session_reasons(status: str, effective_status: str, counts: dict[str, int], stated: dict[str, int | None]) -> dict[str, list[str]]:
    """Reasons that come from the session rather than the fit, per clock ("phone", "sensor").

    counts: rows in the indexes {"phone": phone frames, "sensor": sensor frames, "probes": probes};
    stated: the same numbers as session.json states them (None = not stated)."""
    both: list[str] = []
    if effective_status == "interrupted":
        why = "killed: status 'recording' and no writer holds recording.lock" if status == "recording" else "status interrupted"
        both.append(f"interrupted session ({why}); frames after the interruption are missing")
    elif effective_status == "recording":
        both.append("session is still being recorded (a writer holds recording.lock)")
    out = {"phone": list(both), "sensor": list(both)}
    names = {"phone": ("phone", "phone/frames.csv", "phone frames"), "sensor": ("sensor", "sensor/frames.csv", "sensor frames"),
             "probes": ("phone", "clock/phone_probes.csv", "probes")}
    for key, (clock, index, what) in names.items():
        want = stated.get(key)
        if want is not None and counts.get(key, 0) < want:
            out[clock].append(f"{index} holds {counts.get(key, 0)} {what}, session.json says {want} (index cut short?)")
    return out


def verdict(reasons: list[str]) -> dict:
    return {"verdict": "suspect" if reasons else "ok", "reasons": list(reasons)}
