"""Fitting clock models (pure numerics: arrays in, ClockModel out, no I/O).

Phone, from round-trip probes (t_host_send_ns, t_phone_ns, t_host_recv_ns): NTP-style.
  The phone stamped its time somewhere inside [send, recv]; the midpoint is off by at most
  rtt/2, and by less the shorter the round trip. So the probes are cut into consecutive
  groups, each group keeps only its shortest round trip (slow and lopsided trips are dropped,
  a 50 ms outlier never enters the fit), and offset + drift come from a weighted, outlier-
  rejecting least-squares line through those midpoints. A constant asymmetry (uplink always
  slower than downlink by the same amount) cannot be observed by any round-trip method; only
  its random part is removed.

Sensor, from one-way pairs (t_device_ns, t_host_ns = arrival): arrival = capture + latency,
  latency > 0 and variable, so the mean is biased by the mean latency. The model is the
  LOWER ENVELOPE: the line below every point that maximises the sum of its values (the linear
  program min sum(host - line) s.t. line <= host at every point). Its solution is the edge of
  the lower convex hull above the mean device time, found exactly in O(N) with a monotone
  chain, no solver needed. The envelope maps device time to capture time + the SMALLEST
  latency; `latency_ns` (a fixed latency known for the device, default 0) is subtracted to
  map to capture time. With latency_ns = 0 the model is "capture + minimal transport latency".

  Drift prior: the envelope is the maximum-likelihood line when the latency above it is
  exponential with mean mu (log L = N v(s) / mu + const, v(s) the envelope's value at the mean
  device time for slope s). On a short or jittery stream that likelihood barely pins the slope
  (a busy host early in the stream tilts it by thousands of ppm), so the fit is the MAP under a
  Gaussian prior drift ~ N(0, SENSOR_DRIFT_PRIOR_PPM): max N v(s) / mu - s^2 / (2 sigma^2).
  v(s) is concave and piecewise linear (one piece per lower-hull vertex), so the optimum is found
  exactly piece by piece. A long stream's likelihood is so sharp that the prior moves it by far
  less than a ppm; the fit reports how far the prior moved the drift (`drift_prior_pull_ppm`)
  and the data-only uncertainty, and sync/quality.py calls a fit the prior dominates suspect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfdcap.errors import SyncError
from dfdcap.sync.clock import ClockModel

# A clock jump: the host-minus-device offset changes by more than this between neighbours,
# beyond what 1000 ppm of drift and the measured latencies/round trips explain.
JUMP_NS = 50_000_000
MAX_RATE_PPM = 1000.0
# Drift prior of a sensor's device clock against the host: both are quartz crystals (USB device
# crystals are specified at +-20..50 ppm, a PC's at +-20..100 ppm); their difference is typically a
# few tens of ppm, so a 1-sigma of 40 ppm lets every realistic drift through while keeping a stream
# that cannot pin the slope from tilting by thousands of ppm.
SENSOR_DRIFT_PRIOR_PPM = 40.0
MIN_LATENCY_SCALE_NS = 10_000.0  # floor of the exponential latency scale mu (a near-constant latency)


@dataclass(frozen=True)
class PhoneFit:
    """A phone clock fit and what the report shows. Arrays are (N,) over all probes."""

    model: ClockModel
    rtt_ns: np.ndarray  # int64, round trip of each probe
    residual_ns: np.ndarray  # float64, midpoint host time minus model(t_phone)
    selected: np.ndarray  # bool, shortest round trip of its group
    used: np.ndarray  # bool, selected and not rejected as an outlier


@dataclass(frozen=True)
class SensorFit:
    """A sensor clock fit; residual_ns is host arrival minus the envelope (>= 0), (N,) float64."""

    model: ClockModel
    residual_ns: np.ndarray
    support: np.ndarray  # (2,) int: indices of the two points the envelope rests on


def _check_increasing(t: np.ndarray, what: str, source: str, first_line: int, strict: bool = True) -> None:
    d = np.diff(t)
    bad = np.flatnonzero(d <= 0 if strict else d < 0)
    if bad.size:
        i = int(bad[0]) + 1
        kind = "repeats" if d[bad[0]] == 0 else "goes backwards (clock jump or unsorted rows)"
        raise SyncError(f"{source}:{first_line + i}: {what} {int(t[i])} {kind} after {int(t[i - 1])} on line {first_line + i - 1}")


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float, float]:
    """y ~ a + b (x - xc) by weighted least squares. Returns a, b, xc, var_a, var_b (residual-scaled)."""
    sw = w.sum()
    xc = float((w * x).sum() / sw)
    dx = x - xc
    sxx = float((w * dx * dx).sum())
    a = float((w * y).sum() / sw)
    b = float((w * dx * (y - a)).sum() / sxx) if sxx > 0 else 0.0
    r = y - a - b * dx
    dof = max(len(x) - 2, 1)
    s2 = float((w * r * r).sum() / dof)
    var_a = s2 / sw
    var_b = s2 / sxx if sxx > 0 else np.inf
    return a, b, xc, var_a, var_b


def fit_phone_clock(
    probes: np.ndarray,
    method: str = "band",
    group_size: int | None = None,
    source: str = "clock/phone_probes.csv",
    first_line: int = 2,
) -> PhoneFit:
    """Fit the phone clock -> host clock from round-trip probes.

    probes: (N, 3) int64 ns: t_host_send_ns, t_phone_ns, t_host_recv_ns, in sending order.
    method: "band" (default): every probe says send <= host(t_phone) <= recv; the upper envelope
      of the send points and the lower envelope of the receive points are the tightest of those
      bounds (set by the fastest one-way trips; slow, lopsided and 50 ms trips only give loose
      bounds that never bind), and the model is the line midway between them.
      "midpoint": the classic NTP filter: the shortest round trip of each group of probes, a
      weighted, outlier-rejecting line through their midpoints. Also used if the band is empty
      (the probes are not consistent with one linear clock).
    group_size: probes per group for the filter and the jump check; default N // 40, 3..50.
    source/first_line: where the probes came from, for error messages (row i is line first_line + i).
    """
    if method not in ("band", "midpoint"):
        raise SyncError(f"phone clock fit method {method!r}: expected 'band' or 'midpoint'")
    p = np.asarray(probes)
    if p.ndim != 2 or p.shape[1] != 3:
        raise SyncError(f"{source}: probes must be (N, 3), got {p.shape}")
    p = p.astype(np.int64)
    n = len(p)
    if n < 2:
        raise SyncError(f"{source}: {n} clock probe(s); at least 2 are needed to fit the phone clock")
    send, phone, recv = p[:, 0], p[:, 1], p[:, 2]
    bad = np.flatnonzero(recv < send)
    if bad.size:
        i = int(bad[0])
        raise SyncError(f"{source}:{first_line + i}: reply received ({recv[i]}) before the probe was sent ({send[i]})")
    _check_increasing(send, "t_host_send_ns", source, first_line)
    _check_increasing(phone, "t_phone_ns", source, first_line)

    rtt = recv - send
    h0, p0 = int(send[0]), int(phone[0])
    x = (phone - p0).astype(np.float64)  # phone time, ns since the first probe
    lo = (send - h0).astype(np.float64) - x  # host - phone offset is at least this ...
    hi = (recv - h0).astype(np.float64) - x  # ... and at most this
    y = (lo + hi) / 2.0  # midpoint offset sample

    g = group_size or int(np.clip(n // 40, 3, 50))
    g = max(1, min(g, n))
    starts = np.arange(0, n, g)
    if len(starts) > 1 and n - starts[-1] < max(1, g // 2):
        starts = starts[:-1]  # fold a short tail into the previous group
    ends = np.append(starts[1:], n)
    sel_idx = np.array([s + int(np.argmin(rtt[s:e])) for s, e in zip(starts, ends)])
    selected = np.zeros(n, dtype=bool)
    selected[sel_idx] = True
    _check_phone_jumps(sel_idx, x, y, rtt, source, first_line)

    a, b, xc, var_a, var_b, used_idx = _midpoint_fit(x, y, rtt, sel_idx)
    extra = {"n_probes": int(n), "group_size": int(g), "rtt_median_ns": int(np.median(rtt))}
    mid_a, mid_b, mid_xc = a, b, xc
    used = np.zeros(n, dtype=bool)
    if method == "band":
        band = _band_fit(x, lo, hi)
        if band is not None:
            a, b, xc, sd_a, sd_b, width, support = band
            var_a, var_b = sd_a**2, sd_b**2
            used[support] = True
            extra["method"] = "band: midway between the upper envelope of send times and the lower envelope of receive times"
            extra["band_width_ns"] = int(round(width))
            # cross-check against the classic midpoint fit, at the band's reference time
            extra["midpoint_fit_minus_band_ns"] = int(round(mid_a + mid_b * (xc - mid_xc) - a))
        else:
            method = "midpoint"
            extra["band_inconsistent"] = True
    if method == "midpoint":
        used[:] = False
        used[used_idx] = True
        extra["method"] = "midpoint: shortest round trip per group, weighted robust line through midpoints"
    extra["n_used"] = int(used.sum())
    extra["rtt_used_median_ns"] = int(np.median(rtt[used]))

    residual = y - a - b * (x - xc)
    t0_dev = p0 + int(round(xc))
    # host(x) = h0 + x + a + b (x - xc)  ->  at x = xc: h0 + xc + a
    t0_host = h0 + int(round(xc + a))
    sel_res = residual[selected]
    model = ClockModel(
        t0_dev_ns=t0_dev,
        t0_host_ns=t0_host,
        drift_ppm=b * 1e6,
        residual_ns=float(np.sqrt(np.mean(sel_res**2))),
        offset_std_ns=float(np.sqrt(var_a)),
        drift_std_ppm=float(np.sqrt(var_b) * 1e6) if np.isfinite(var_b) else float("inf"),
        extra=extra,
    )
    return PhoneFit(model, rtt, residual, selected, used)


def _midpoint_fit(x, y, rtt, sel_idx):
    """NTP filter fit: weighted line through the selected midpoints, rejecting > 4 robust sigmas."""
    used_idx = sel_idx
    med_rtt = float(np.median(rtt[used_idx]))
    keep = rtt[used_idx] <= 3.0 * med_rtt + 100_000  # groups where every trip was slow
    used_idx = used_idx[keep] if keep.sum() >= 2 else used_idx
    for _ in range(3):
        w = 1.0 / np.maximum(rtt[used_idx].astype(np.float64), 10_000.0) ** 2
        if len(used_idx) >= 2 and np.ptp(x[used_idx]) > 0:
            a, b, xc, var_a, var_b = _weighted_line(x[used_idx], y[used_idx], w)
        else:
            a, b, xc, var_a, var_b = float(np.average(y[used_idx], weights=w)), 0.0, float(x[used_idx].mean()), 0.0, np.inf
        r = y[used_idx] - a - b * (x[used_idx] - xc)
        mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
        ok = np.abs(r) <= max(4.0 * mad, 20_000.0)
        if ok.all() or ok.sum() < max(2, len(used_idx) // 2):
            break
        used_idx = used_idx[ok]
    return a, b, xc, var_a, var_b, used_idx


def _band_fit(x, lo, hi, tol_ns: float = 20_000.0):
    """Line midway between the upper envelope of lo and the lower envelope of hi (x increasing).

    Returns (value at mean x, slope, mean x, offset sd, slope sd, band width at mean x, support
    indices) or None when the band is empty (no straight line fits between all bounds).
    sd: spread of the same fit on 4 interleaved subsets / 2 (a rough standard error)."""
    if len(x) < 2:
        return None

    def center(xs, los, his):
        vh, sh, i1, j1 = _envelope(xs, his)
        vl, sl, i2, j2 = _envelope(xs, -los)
        return (vh - vl) / 2.0, (sh - sl) / 2.0, vh + vl, (i1, j1, i2, j2), float(xs.mean())

    v, s, width, sup, xbar = center(x, lo, hi)
    line = v + s * (x - xbar)
    if width < -tol_ns or np.max(lo - line) > tol_ns or np.min(hi - line) < -tol_ns:
        return None
    if len(x) >= 16:
        vals, slopes = [], []
        for k in range(4):
            vk, sk, _, _, xk = center(x[k::4], lo[k::4], hi[k::4])
            vals.append(vk + sk * (xbar - xk))
            slopes.append(sk)
        sd_v, sd_s = float(np.std(vals)) / 2.0, float(np.std(slopes)) / 2.0
    else:
        sd_v, sd_s = max(width, 0.0) / np.sqrt(12.0), float(max(width, 0.0) / max(np.ptp(x), 1.0))
    return v, s, xbar, sd_v, sd_s, width, np.unique(np.array(sup))


def _check_phone_jumps(sel_idx, x, y, rtt, source, first_line) -> None:
    """Consecutive best probes must agree on the offset within their round trips + 1000 ppm."""
    if len(sel_idx) < 2:
        return
    ys, xs, rs = y[sel_idx], x[sel_idx], rtt[sel_idx].astype(np.float64)
    step = np.abs(np.diff(ys))
    allow = JUMP_NS + MAX_RATE_PPM * 1e-6 * np.diff(xs) + (rs[1:] + rs[:-1]) / 2
    bad = np.flatnonzero(step > allow)
    if bad.size:
        k = int(bad[0])
        raise SyncError(
            f"{source}:{first_line + int(sel_idx[k + 1])}: the phone clock jumps by {np.diff(ys)[k] / 1e6:+.1f} ms "
            f"relative to the host between lines {first_line + int(sel_idx[k])} and {first_line + int(sel_idx[k + 1])}"
        )


def lower_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points sorted by strictly increasing x (monotone chain)."""
    x = np.asarray(x, dtype=np.float64).tolist()
    y = np.asarray(y, dtype=np.float64).tolist()
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            # keep a only if (o, a, i) turns left (counter-clockwise)
            if (x[a] - x[o]) * (y[i] - y[o]) - (y[a] - y[o]) * (x[i] - x[o]) <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return np.array(hull, dtype=np.int64)


def _envelope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int, int]:
    """The LP solution max sum(line) s.t. line(x_i) <= y_i: the lower-hull edge above mean(x).

    x strictly increasing. Returns (line value at mean(x), slope, i, j), i and j the two
    support points (equal when there is one point)."""
    xbar = float(x.mean())
    if len(x) == 1:
        return float(y[0]), 0.0, 0, 0
    hull = lower_hull(x, y)
    k = int(np.searchsorted(x[hull], xbar, side="right"))
    k = min(max(k, 1), len(hull) - 1)
    i, j = int(hull[k - 1]), int(hull[k])
    slope = (y[j] - y[i]) / (x[j] - x[i])
    return float(y[i] + slope * (xbar - x[i])), float(slope), i, j


def map_envelope(x: np.ndarray, y: np.ndarray, scale: float, prior_sd: float) -> tuple[float, float, int]:
    """max over slope s of scale * v(s) - s^2 / (2 prior_sd^2), v(s) = min_i y_i - s (x_i - mean x).

    x strictly increasing. Exact: on the slope interval where hull vertex k is the minimiser, the
    objective is a parabola with its top at s = -scale * prior_sd^2 * (x_k - mean x), clipped to
    that interval. Returns (v at the optimum, slope, the vertex it rests on)."""
    xbar = float(x.mean())
    hull = lower_hull(x, y)
    hx, hy = x[hull] - xbar, y[hull]
    edges = np.diff(hy) / np.diff(hx) if len(hull) > 1 else np.zeros(0)
    lo = np.concatenate([[-np.inf], edges])  # vertex k is the minimiser for slopes in [lo_k, hi_k]
    hi = np.concatenate([edges, [np.inf]])
    s = np.clip(-scale * prior_sd**2 * hx, lo, hi)
    obj = scale * (hy - s * hx) - s**2 / (2.0 * prior_sd**2)
    k = int(np.argmax(obj))
    return float(hy[k] - s[k] * hx[k]), float(s[k]), int(hull[k])


def fit_sensor_clock(
    t_device_ns: np.ndarray,
    t_host_ns: np.ndarray,
    latency_ns: int = 0,
    source: str = "sensor/frames.csv",
    first_line: int = 2,
    drift_prior_ppm: float = SENSOR_DRIFT_PRIOR_PPM,
) -> SensorFit:
    """Fit the sensor device clock -> host clock from one-way pairs by their lower envelope.

    t_device_ns, t_host_ns: (N,) int64, device stamp and host arrival time of each frame, in
    arrival order (row i is line first_line + i of `source`, for error messages).
    latency_ns: fixed latency known for the device, subtracted from the envelope (see module doc).
    drift_prior_ppm: 1-sigma of the Gaussian drift prior (inf = the plain envelope, no prior).
    """
    td = np.asarray(t_device_ns).astype(np.int64).ravel()
    th = np.asarray(t_host_ns).astype(np.int64).ravel()
    if td.shape != th.shape:
        raise SyncError(f"{source}: {td.size} device stamps but {th.size} host stamps")
    n = td.size
    if n < 2:
        raise SyncError(f"{source}: {n} sensor frame(s); at least 2 are needed to fit the sensor clock")
    if not drift_prior_ppm > 0:
        raise SyncError(f"sensor drift prior must be > 0 ppm, got {drift_prior_ppm}")
    _check_increasing(td, "t_device_ns", source, first_line)
    d0, h0 = int(td[0]), int(th[0])
    x = (td - d0).astype(np.float64)
    y = (th - h0).astype(np.float64) - x  # host - device offset sample (+ latency)
    _check_sensor_jumps(x, y, source, first_line)

    free_value, free_slope, i, j = _envelope(x, y)
    xbar = float(x.mean())
    mu = max(float(np.median(y - (free_value + free_slope * (x - xbar)))) / np.log(2.0), MIN_LATENCY_SCALE_NS)
    prior_sd = drift_prior_ppm * 1e-6
    value, slope = free_value, free_slope
    if np.isfinite(prior_sd):
        value, slope, k = map_envelope(x, y, n / mu, prior_sd)
        if slope != free_slope:
            i = j = k
    residual = y - (value + slope * (x - xbar))
    off_std, data_drift_std, drift_std = _sensor_fit_spread(x, y, mu, prior_sd, residual)
    model = ClockModel(
        t0_dev_ns=d0 + int(round(xbar)),
        t0_host_ns=h0 + int(round(xbar + value)) - int(latency_ns),
        drift_ppm=slope * 1e6,
        residual_ns=float(np.sqrt(np.mean(residual**2))),
        offset_std_ns=off_std,
        drift_std_ppm=drift_std,
        extra={
            "method": "lower envelope of (device, host arrival) pairs, MAP under a Gaussian drift prior, minus a fixed latency",
            "n_frames": int(n),
            "latency_ns": int(latency_ns),
            "drift_prior_ppm": float(drift_prior_ppm),
            "drift_data_ppm": float(free_slope * 1e6),
            "drift_data_std_ppm": data_drift_std,
            "drift_prior_pull_ppm": float((slope - free_slope) * 1e6),
            "latency_scale_ns": float(mu),
            "latency_above_envelope_median_ns": int(np.median(residual)),
            "latency_above_envelope_p95_ns": int(np.percentile(residual, 95)),
            "latency_above_envelope_max_ns": int(residual.max()),
        },
    )
    return SensorFit(model, residual, np.array([i, j]))


def _sensor_fit_spread(x, y, mu, prior_sd, residual) -> tuple[float, float, float]:
    """(offset std ns, data-only drift std ppm, posterior drift std ppm), rough 1-sigma values.

    The spread of the same fit on 4 interleaved subsets / 2 (each a quarter of the data); the
    posterior drift std combines the data-only one with the prior as Gaussians combine."""
    if len(x) < 16:
        data_sd, off_std = float("inf"), float(np.ptp(residual))
    else:
        xbar = float(x.mean())
        vals, free = [], []
        for k in range(4):
            xs, ys = x[k::4], y[k::4]
            v, s, _, _ = _envelope(xs, ys)
            free.append(s)
            if np.isfinite(prior_sd):
                v, s, _ = map_envelope(xs, ys, len(xs) / mu, prior_sd)
            vals.append(v + s * (xbar - xs.mean()))
        off_std, data_sd = float(np.std(vals) / 2.0), float(np.std(free) / 2.0)
    with np.errstate(divide="ignore"):
        post = 1.0 / np.sqrt(np.float64(1.0 / data_sd**2 + 1.0 / prior_sd**2)) if data_sd > 0 else 0.0
    return off_std, data_sd * 1e6, float(post) * 1e6


def _check_sensor_jumps(x: np.ndarray, y: np.ndarray, source: str, first_line: int) -> None:
    """The running minimum of (host - device) must not step by more than JUMP_NS + 1000 ppm.

    Minima over windows of up to 30 frames ignore latency spikes and stalls shorter than that."""
    n = len(x)
    w = int(min(30, n // 4))
    if w < 2:
        return
    from numpy.lib.stride_tricks import sliding_window_view

    m = sliding_window_view(y, w).min(axis=1)  # m[k] = min y[k:k+w]
    before, after = m[: n - 2 * w + 1], m[w:]  # windows [i-w, i) and [i, i+w) for i = w..n-w
    span = x[2 * w - 1 :] - x[: n - 2 * w + 1]
    step = after - before
    bad = np.flatnonzero(np.abs(step) > JUMP_NS + MAX_RATE_PPM * 1e-6 * span)
    if bad.size:
        k = int(bad[0])
        # the frame where it happens: largest single step inside the two windows
        seg = y[k : k + 2 * w]
        i = k + 1 + int(np.argmax(np.diff(seg) * np.sign(step[k])))
        raise SyncError(
            f"{source}:{first_line + i}: the sensor clock jumps by {step[k] / 1e6:+.1f} ms relative to the host "
            f"between lines {first_line + i - 1} and {first_line + i}"
        )
