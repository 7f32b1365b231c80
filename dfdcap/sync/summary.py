"""Rich summary of a SyncResult for `dfdcap sync` (printing only; the numbers come from sync.json)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dfdcap.sync.io import SyncResult


def _ms(ns) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def print_sync_summary(result: SyncResult, console: Console) -> None:
    t = Table(title=f"clocks -> host ({result.path})", title_justify="left")
    for c in ("clock", "offset at t0 (s)", "drift (ppm)", "offset std (ms)", "drift std (ppm)", "residual (ms)", "samples"):
        t.add_column(c, justify="right" if c != "clock" else "left")
    for name, m in (("phone", result.phone), ("sensor", result.sensor)):
        n = m.extra.get("n_probes", m.extra.get("n_frames", "?"))
        used = m.extra.get("n_used")
        t.add_row(name, f"{(m.t0_host_ns - m.t0_dev_ns) / 1e9:+.6f}", f"{m.drift_ppm:+.3f}", f"{m.offset_std_ns / 1e6:.4f}",
                  f"{m.drift_std_ppm:.3f}", f"{m.residual_ns / 1e6:.3f}", f"{n}" + (f" ({used} bind)" if used is not None else ""))
    console.print(t)
    s = result.stats
    g = s.get("abs_gap_ns", {})
    console.print(
        f"pairing [bold]{result.mode}[/bold], max gap {_ms(result.max_gap_ns)} ms (sensor period {_ms(result.sensor_period_ns)} ms): "
        f"{s.get('n_matched')}/{s.get('n_phone_frames')} phone frames matched, {s.get('n_unmatched')} unmatched; "
        f"|gap| median {_ms(g.get('median'))} ms, p95 {_ms(g.get('p95'))} ms, max {_ms(g.get('max'))} ms",
        highlight=False,
    )
    gaps = s.get("sensor_frame_gaps", [])
    if gaps:
        missing = sum(x["missing_frames"] for x in gaps)
        console.print(f"sensor stream: {len(gaps)} gap(s), about {missing} frame(s) missing", highlight=False)
    if s.get("unmatched_phone_indices"):
        idx = s["unmatched_phone_indices"]
        console.print(f"unmatched phone frames: {idx[:20]}{' ...' if len(idx) > 20 else ''}", highlight=False)
    for clock, reasons in result.suspect.items():
        console.print(f"{clock} clock: suspect: {'; '.join(reasons)}", style="yellow", markup=False, highlight=False)
