"""Benchmark: `dfdcap associate`'s greedy matching on 10^6 x 10^6 timestamps (goal < 0.5 s), against a
straightforward implementation of TUM associate.py's algorithm measured in the same run on 10^4 x 10^4.

The straightforward algorithm compares every pair (n * m gap computations, then sorts the
candidates), so its time grows with n * m: its 10^4 x 10^4 time is scaled by (10^6 / 10^4)^2 = 10^4
to 10^6 x 10^6 (the candidate sort, O(k log k) with k ~ n, is negligible next to n * m). The run
also times it at 2.5 * 10^3 x 2.5 * 10^3 to show the quadratic growth that the scaling assumes.

    python benchmarks/associate.py [--n 1000000] [--plain-n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dfdcap.sync.associate import greedy_associate, greedy_associate_reference


def tum_like_streams(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 30 Hz streams in seconds (~1.3e9, as TUM's), jittered by 3 ms, 1 % dropped each, independent phase."""
    rng = np.random.default_rng(seed)
    period = 1 / 30.0
    m = int(n * 1.0102) + 10
    a = 1305031102.0 + np.arange(m) * period + rng.normal(0, 0.003, m)
    b = 1305031102.0 + 0.0117 + np.arange(m) * period * (1 + 20e-6) + rng.normal(0, 0.003, m)
    a = np.sort(a[rng.random(m) > 0.01])[:n]
    b = np.sort(b[rng.random(m) > 0.01])[:n]
    return np.round(a, 6), np.round(b, 6)  # TUM files hold microseconds


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--plain-n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    a, b = tum_like_streams(args.n)
    assert np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
    greedy_associate(a[:1000], b[:1000], 0.02)  # warm-up
    t_fast, (i, j) = best_of(lambda: greedy_associate(a, b, 0.02), args.repeat)
    print(f"fast greedy      {args.n:>9} x {args.n:<9}: {t_fast:.3f} s (best of {args.repeat}), {len(i)} pairs"
          f"  [goal < 0.5 s: {'met' if t_fast < 0.5 else 'MISSED'}]")

    pn = args.plain_n
    small_n = pn // 4
    t_small, _ = best_of(lambda: greedy_associate_reference(a[:small_n].tolist(), b[:small_n].tolist(), 0.02), 1)
    t_plain, ref = best_of(lambda: greedy_associate_reference(a[:pn].tolist(), b[:pn].tolist(), 0.02), 1)
    fi, fj = greedy_associate(a[:pn], b[:pn], 0.02)
    same = list(zip(fi.tolist(), fj.tolist())) == ref
    print(f"plain associate.py algorithm {small_n} x {small_n}: {t_small:.3f} s; {pn} x {pn}: {t_plain:.3f} s "
          f"(x{t_plain / t_small:.1f} for x{(pn / small_n) ** 2:.0f} pairs: quadratic)")
    print(f"fast == plain on {pn} x {pn}: {same}")
    scale = (args.n / pn) ** 2
    t_plain_scaled = t_plain * scale
    print(f"plain scaled to {args.n} x {args.n} by (n/{pn})^2 = {scale:.0f}: {t_plain_scaled:.0f} s "
          f"({t_plain_scaled / 3600:.1f} h)")
    print(f"ratio plain(scaled) / fast: {t_plain_scaled / t_fast:,.0f}x")
    t_same, _ = best_of(lambda: greedy_associate(a[:pn], b[:pn], 0.02), args.repeat)
    print(f"ratio at equal size {pn} x {pn} (measured, not scaled): {t_plain / t_same:,.0f}x  (fast {t_same * 1e3:.2f} ms)")
    if not same:
        raise SystemExit("fast and plain results differ")


if __name__ == "__main__":
    main()
