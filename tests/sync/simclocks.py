"""A simulated 5-minute recording's timestamps (no images): probes, sensor and phone frame stamps,
and the true pairing. Clocks come from dfdcap.sim.clock.SimClock (the simulator's clock)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfdcap.sim.clock import SimClock

MS = 1_000_000


@dataclass
class SimStamps:
    phone_clock: SimClock
    sensor_clock: SimClock
    probes: np.ndarray  # (K, 3) t_host_send_ns, t_phone_ns, t_host_recv_ns
    sensor_dev: np.ndarray  # (M,) device stamps of the frames that arrived
    sensor_arrival: np.ndarray  # (M,) host arrival
    sensor_capture: np.ndarray  # (M,) true host capture time
    sensor_index: np.ndarray  # (M,) frame index (gaps where dropped)
    phone_stamp: np.ndarray  # (N,) phone clock stamps
    phone_capture: np.ndarray  # (N,) true host capture time
    phone_index: np.ndarray  # (N,)
    true_j: np.ndarray  # (N,) position in the sensor arrays of the true nearest frame, -1 = none
    period_ns: int
    fixed_latency_ns: int


def simulate(seed: int = 0, duration_s: float = 300.0, sensor_fps: float = 30.0, phone_fps: float = 29.7,
             fixed_latency_ns: int = 800_000, margin_ns: int = 2 * MS, link: str = "uniform") -> SimStamps:
    """Phone clock: offset of seconds, +50 ppm; sensor clock: another offset, -50 ppm (SimClock, with
    stamp jitter). Probes: 5 at each end and one a second, up-link 0.5 + U(0, 3.5) ms and down-link
    0.5 + U(0, 1) ms (asymmetric, round trips 1-5 ms; link="gamma": the simulator phone's skewed
    shape), 5 % delayed by 50 ms one way. Sensor frames
    arrive fixed_latency + Exp(2 ms) after capture, 5 % of arrivals 50 ms late, 3 % dropped plus a
    burst of 12. Phone frames: 2 % dropped, and frames whose true pairing is ambiguous within
    margin_ns (nearest and second-nearest gaps, or the max gap) are left out so the test asks for
    what timing can decide."""
    rng = np.random.default_rng(seed)
    t0 = 5_000_000_000_000 + int(rng.integers(0, 10**12))
    pc = SimClock(offset_ns=int(rng.uniform(2, 9) * 1e9), drift_ppm=50.0, jitter_ns=2_000, seed=seed + 1, t0_host_ns=t0)
    sc = SimClock(offset_ns=-int(rng.uniform(2, 9) * 1e9), drift_ppm=-50.0, jitter_ns=10_000, seed=seed + 2, t0_host_ns=t0)
    dur = int(duration_s * 1e9)

    # probes
    send = np.concatenate([t0 + np.arange(5) * 10 * MS, t0 + np.arange(1, int(duration_s)) * 1_000 * MS,
                           t0 + dur + np.arange(5) * 10 * MS])
    send = send + rng.integers(0, 3 * MS, send.size)
    if link == "uniform":
        up = (0.5 + rng.uniform(0, 3.5, send.size)) * MS
        down = (0.5 + rng.uniform(0, 1.0, send.size)) * MS
    else:  # "gamma": the shape dfdcap.sim.phone uses: 1 ms + Gamma(2, 0.8 ms) up, 0.7x another down (>= 1 ms)
        up = (1.0 + rng.gamma(2.0, 0.8, send.size)) * MS
        down = np.maximum(1.0, 0.7 * (1.0 + rng.gamma(2.0, 0.8, send.size))) * MS
    slow = rng.random(send.size) < 0.05
    side = rng.random(send.size) < 0.5
    up = up + np.where(slow & side, 50 * MS, 0)
    down = down + np.where(slow & ~side, 50 * MS, 0)
    up, down = up.astype(np.int64), down.astype(np.int64)
    for k in range(1, send.size):  # one probe at a time: the next is sent after the last reply
        send[k] = max(send[k], send[k - 1] + up[k - 1] + down[k - 1] + 100_000)
    probes = np.stack([send, pc.device_from_host_ns(send + up), send + up + down], axis=1)

    # sensor frames
    period = int(round(1e9 / sensor_fps))
    n_s = int(dur // period)
    cap = t0 + 20 * MS + np.arange(n_s) * period + rng.integers(-200_000, 200_000, n_s)
    keep = rng.random(n_s) > 0.03
    b = int(rng.integers(100, n_s - 100))
    keep[b:b + 12] = False
    s_index = np.flatnonzero(keep)
    cap = cap[keep]
    lat = fixed_latency_ns + rng.exponential(2 * MS, cap.size).astype(np.int64)
    lat = lat + np.where(rng.random(cap.size) < 0.05, 50 * MS, 0)
    arrival = np.maximum.accumulate(cap + lat)  # frames arrive in order: a late one delays the next
    s_dev = sc.device_from_host_ns(cap)

    # phone frames
    pp = int(round(1e9 / phone_fps))
    n_p = int((dur - 1_000 * MS) // pp)
    pcap = t0 + 500 * MS + np.arange(n_p) * pp + rng.integers(-300_000, 300_000, n_p)
    p_index = np.arange(n_p)
    pk = rng.random(n_p) > 0.02
    pcap, p_index = pcap[pk], p_index[pk]
    # true pairing: nearest captured sensor frame within half the period
    k = np.searchsorted(cap, pcap)
    left, right = np.clip(k - 1, 0, cap.size - 1), np.clip(k, 0, cap.size - 1)
    dl, dr = np.abs(pcap - cap[left]), np.abs(cap[right] - pcap)
    j = np.where(dr < dl, right, left)
    g1 = np.minimum(dl, dr)
    g2 = np.where(dr < dl, dl, dr)
    clear = (np.abs(g2 - g1) > margin_ns) | (left == right)
    clear &= np.abs(g1 - period / 2) > margin_ns
    pcap, p_index, j, g1 = pcap[clear], p_index[clear], j[clear], g1[clear]
    true_j = np.where(g1 <= period / 2, j, -1)
    return SimStamps(pc, sc, probes, s_dev, arrival, cap, s_index, pc.device_from_host_ns(pcap), pcap, p_index,
                     true_j, period, fixed_latency_ns)
