"""Associating two timestamp streams (pure numerics; text-file parsing is in dfdcap.sync.io).

`greedy_associate` gives exactly the TUM RGB-D `associate.py` result (every pair with
|a - (b + offset)| < max_difference is a candidate; candidates are taken greedily by smallest
gap, ties by smaller a then smaller b; one-to-one), but fast:

1. Candidates: only the b within max_difference of each a, found by two `searchsorted` calls
   on the sorted streams (O((n + m) log m) instead of n * m comparisons).
2. One stable argsort by gap of the candidates listed in (a, b) order = the (gap, a, b) order.
3. Greedy by rounds of "locally dominant" edges: an edge that is the first (in that order)
   among all remaining edges of its a AND of its b is taken by the sequential greedy too (no
   earlier edge can have used its ends), and every other edge at its ends would be rejected.
   Accept all of them at once (vectorised), drop their ends' edges, repeat. Realistic streams
   finish in a handful of rounds; an adversarial chain (gaps growing along the chain) takes the
   rest in a plain sequential loop, which is the same greedy on what is left.
"""

from __future__ import annotations

import numpy as np

from dfdcap.errors import SyncError

MAX_CANDIDATES = 50_000_000


def candidate_pairs(a: np.ndarray, b: np.ndarray, max_difference, offset=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j) with |a[i] - (b[j] + offset)| < max_difference, listed in (i, j) order.

    a: (N,), b: (M,) sorted ascending, same dtype family (float64 seconds or int64 ns).
    Returns i (K,) int64, j (K,) int64, gap (K,) = |a[i] - (b[j] + offset)| in the arrays' dtype,
    computed exactly as associate.py computes it (so the comparisons agree bit for bit).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    bo = b + offset  # same rounding as Python's b + offset
    if a.size == 0 or b.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=np.result_type(a, bo))
    if np.issubdtype(bo.dtype, np.floating):
        scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(bo))), 1.0)
        margin = 16 * np.spacing(scale) + 1e-9 * abs(float(max_difference))
    else:
        margin = 0
    lo = np.searchsorted(bo, a - max_difference - margin, side="left")
    hi = np.searchsorted(bo, a + max_difference + margin, side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total > MAX_CANDIDATES:
        raise SyncError(
            f"max difference {max_difference} makes {total} candidate pairs (> {MAX_CANDIDATES}); "
            "use a smaller max difference"
        )
    i = np.repeat(np.arange(a.size, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    j = np.arange(total, dtype=np.int64) - np.repeat(starts - lo, counts)
    gap = np.abs(a[i] - bo[j])
    keep = gap < max_difference
    return i[keep], j[keep], gap[keep]


def greedy_associate(a: np.ndarray, b: np.ndarray, max_difference, offset=0) -> tuple[np.ndarray, np.ndarray]:
    """TUM associate.py matching of sorted a (N,) to sorted b (M,): returns (i, j) (K,) int64,
    one-to-one, sorted by i. Same result as `greedy_associate_reference`, in about O(K) per round.

    Edges are ordered by (gap, i, j) -- associate.py's (diff, a, b) order, as a and b are sorted
    and unique. No global sort is needed: per a (and per b) the first edge in that order is found
    with two unbuffered minimum reductions (smallest gap, then smallest partner index).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    A, B, G = candidate_pairs(a, b, max_difference, offset)
    used_a = np.zeros(a.size, dtype=bool)
    used_b = np.zeros(b.size, dtype=bool)
    match = np.full(a.size, -1, dtype=np.int64)
    big = np.iinfo(np.int64).max
    gmax = np.inf if np.issubdtype(G.dtype, np.floating) else np.iinfo(G.dtype).max
    rounds = 0
    while A.size:
        best_a = _first_edges(A, B, G, a.size, gmax, big)
        best_b = _first_edges(B, A, G, b.size, gmax, big)
        take = (best_a[A] == B) & (best_b[B] == A)
        ti, tj = A[take], B[take]
        match[ti] = tj
        used_a[ti] = True
        used_b[tj] = True
        live = ~(used_a[A] | used_b[B])
        A, B, G = A[live], B[live], G[live]
        rounds += 1
        if rounds >= 8 and A.size and int(take.sum()) * 64 < A.size:
            # a long chain: finish with the sequential greedy (the same greedy on what is left)
            order = np.lexsort((B, A, G))
            for x, y in zip(A[order].tolist(), B[order].tolist()):
                if not used_a[x] and not used_b[y]:
                    used_a[x] = True
                    used_b[y] = True
                    match[x] = y
            break
    mi = np.flatnonzero(match >= 0)
    return mi, match[mi]


def _first_edges(U: np.ndarray, V: np.ndarray, G: np.ndarray, n: int, gmax, big: int) -> np.ndarray:
    """For each vertex u < n: the partner v of its first edge in (gap, u, v) order, else -1.

    U, V, G: (K,) edges (vertex, partner, gap). Ties in gap at u go to the smaller partner,
    which is (gap, i, j) order whichever side u is on, since the partner is then compared last
    or the vertex is fixed."""
    g = np.full(n, gmax, dtype=G.dtype)
    np.minimum.at(g, U, G)
    on = G == g[U]
    v = np.full(n, big, dtype=np.int64)
    np.minimum.at(v, U[on], V[on])
    v[v == big] = -1
    return v


def greedy_associate_reference(a, b, max_difference, offset=0) -> list[tuple[int, int]]:
    """associate.py's algorithm written out plainly (O(N M)); the yardstick for tests and the benchmark.

    a, b: sequences of unique timestamps. Returns [(i, j)] sorted by a[i]."""
    a = list(a)
    b = list(b)
    potential = [
        (abs(x - (y + offset)), x, y, ii, jj)
        for ii, x in enumerate(a)
        for jj, y in enumerate(b)
        if abs(x - (y + offset)) < max_difference
    ]
    potential.sort()
    free_a, free_b = set(range(len(a))), set(range(len(b)))
    matches = []
    for _, x, y, ii, jj in potential:
        if ii in free_a and jj in free_b:
            free_a.remove(ii)
            free_b.remove(jj)
            matches.append((x, y, ii, jj))
    matches.sort()
    return [(ii, jj) for _, _, ii, jj in matches]


def nearest_associate(t_first: np.ndarray, t_second: np.ndarray, max_gap) -> tuple[np.ndarray, np.ndarray]:
    """Many-to-one: each t_first gets the nearest t_second (ties: the earlier one) if within max_gap.

    t_first: (N,) any order; t_second: (M,) sorted ascending; same units.
    Returns j (N,) int64 (-1 = unmatched) and gap (N,) = t_second[j] - t_first (signed; 0 where unmatched).
    """
    t1 = np.asarray(t_first)
    t2 = np.asarray(t_second)
    if t2.size == 0:
        return np.full(t1.size, -1, dtype=np.int64), np.zeros(t1.size, dtype=t1.dtype)
    k = np.searchsorted(t2, t1, side="left")
    left = np.clip(k - 1, 0, t2.size - 1)
    right = np.clip(k, 0, t2.size - 1)
    dl = np.abs(t1 - t2[left])
    dr = np.abs(t2[right] - t1)
    j = np.where(dr < dl, right, left).astype(np.int64)
    gap = t2[j] - t1
    ok = np.abs(gap) <= max_gap
    j[~ok] = -1
    gap = np.where(ok, gap, 0)
    return j, gap


def one_to_one_associate(t_first: np.ndarray, t_second: np.ndarray, max_gap) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (greedy by smallest gap, as associate.py) in the output form of nearest_associate.

    t_first: (N,) sorted ascending; t_second: (M,) sorted ascending; gaps <= max_gap accepted."""
    t1 = np.asarray(t_first)
    t2 = np.asarray(t_second)
    # associate.py's test is strict (< max); for integers <= max is < max + 1
    lim = max_gap + 1 if np.issubdtype(np.result_type(t1, t2), np.integer) else np.nextafter(max_gap, np.inf)
    i, j = greedy_associate(t1, t2, lim)
    jj = np.full(t1.size, -1, dtype=np.int64)
    jj[i] = j
    gap = np.zeros(t1.size, dtype=np.result_type(t1, t2))
    gap[i] = t2[j] - t1[i]
    return jj, gap
