"""Sync stage I/O: TUM "timestamp data" files, `sync_session` (fit + pair + write sync.json), `read_sync`.

sync.json (written atomically into the session folder):
  {"schema": 1,
   "phone": ClockModel dict, "sensor": ClockModel dict   (DESIGN.md form + offset_std_ns, drift_std_ppm, ...),
   "association": {"mode", "max_gap_ns", "sensor_period_ns"},
   "pairs": [{"phone_index", "sensor_index" (null = unmatched), "gap_ns" (sensor - phone host time, null),
              "ramp", "step"}],               one per phone frame, so every stack keeps every frame's pairing
   "stats": {gap statistics, unmatched phone frames, sensor frame gaps},
   "stacks": [{"ramp", "n_frames", "n_matched", "max_abs_gap_ns"}],
   "residuals": {"phone": per-probe arrays, "sensor": percentiles},
   "quality": {"phone": {"verdict": "ok" | "suspect", "reasons": [...]}, "sensor": {...}}   (sync/quality.py),
   "inputs_sha256": {"sensor/frames.csv", "phone/frames.csv", "clock/phone_probes.csv": sha256 of the file
                     (null: absent), "session.json": sha256 of the keys sync reads (SESSION_KEYS and
                     rig.sensor.latency_ns) as sorted compact JSON}}
"inputs_sha256" is what read_sync(session_dir, session) compares: a sync.json whose inputs changed since (a
re-recorded or edited index, a `pull` that added frames) is out of date. A sync.json without it (older
dfdcap) is read as it is. Only these keys of session.json count: `pull` and `record` add others after sync.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfdcap.errors import DfdcapError, SyncError
from dfdcap.fileio import atomic_write_json, read_json
from dfdcap.sync.associate import greedy_associate, nearest_associate, one_to_one_associate
from dfdcap.sync.clock import ClockModel
from dfdcap.sync.fit import PhoneFit, SensorFit, fit_phone_clock, fit_sensor_clock
from dfdcap.sync.quality import phone_reasons, sensor_reasons, session_reasons, verdict

SYNC_SCHEMA = 1
MODES = ("many-to-one", "one-to-one")
SYNC_INPUTS = ("sensor/frames.csv", "phone/frames.csv", "clock/phone_probes.csv")
SESSION_KEYS = ("schema", "status", "sensor_latency_ns", "recorder", "focus_schedule")  # + rig.sensor.latency_ns
MAX_SENSOR_LATENCY_NS = 1_000_000_000  # a fixed sensor latency beyond +-1 s is a wrong unit, not a latency
MAX_GAP_NS = 60_000_000_000  # the largest pairing gap `dfdcap sync --max-gap-ms` takes (60 s)


# --- TUM timestamp files -------------------------------------------------------------------


@dataclass(frozen=True)
class TimestampFile:
    """A TUM RGB-D "timestamp data..." list. t: (N,) float64 seconds, strictly increasing (N may be 0)."""

    path: Path
    t: np.ndarray
    data: list[str]  # the rest of each line, fields joined by one space (as associate.py prints it)
    lines: np.ndarray  # (N,) int, 1-based line number of each entry


def parse_timestamp_text(text: str, source: str) -> TimestampFile:
    """Parse as associate.py's read_file_list does, with its dict semantics.

    ',' and tab are spaces; lines starting with '#' are comments; a line with fewer than two fields
    (a bare timestamp, a blank line) is skipped; entries are keyed by float(timestamp), so a
    repeated timestamp keeps its first key and the last line's data; entries come out sorted.
    Entries whose timestamp is not finite are dropped (associate.py keeps them, but their gaps are
    never below the max difference, so they never print). A first field that is not a number is
    a SyncError naming the line (associate.py stops with a traceback there)."""
    fast = _parse_plain(text, source)
    return fast if fast is not None else _parse_general(text, source)


def _parse_plain(text: str, source: str) -> TimestampFile | None:
    """Fast path for well-formed files with single spaces (the usual case), vectorised checks.

    Returns None whenever anything is unusual; the general parser then gives the same result or
    the line-numbered error."""
    if any(c in text for c in ("\t", ",", "\r", "  ", " \n", "\n ")) or text[:1] == " " or text[-1:] == " ":
        return None
    lines = text.split("\n")
    num = [k for k, line in enumerate(lines, start=1) if line and line[0] != "#"]
    if not num:
        return None
    parts = [lines[k - 1].partition(" ") for k in num]
    data = [q[2] for q in parts]
    try:
        t = np.array([float(q[0]) for q in parts], dtype=np.float64)
    except ValueError:
        return None
    if not np.all(np.isfinite(t)) or not all(data) or (t.size > 1 and not np.all(np.diff(t) > 0)):
        return None
    return TimestampFile(Path(source), t, data, np.array(num))


def _parse_general(text: str, source: str) -> TimestampFile:
    entries: dict[float, list] = {}  # float(stamp) -> [first key, data of the last line, its line number]
    for n, line in enumerate(text.replace(",", " ").replace("\t", " ").split("\n"), start=1):
        if not line or line[0] == "#":
            continue
        fields = [v.strip() for v in line.split(" ") if v.strip() != ""]
        if len(fields) < 2:
            continue
        try:
            ts = float(fields[0])
        except ValueError:
            raise SyncError(f"{source}:{n}: {fields[0]!r} is not a timestamp (expected 'timestamp data...')") from None
        if not math.isfinite(ts):
            continue
        if ts in entries:
            entries[ts][1:] = [" ".join(fields[1:]), n]
        else:
            entries[ts] = [ts, " ".join(fields[1:]), n]
    rows = sorted(entries.values(), key=lambda e: e[0])
    return TimestampFile(Path(source), np.array([e[0] for e in rows], dtype=np.float64), [e[1] for e in rows],
                         np.array([e[2] for e in rows], dtype=np.int64))


def read_timestamp_file(path: str | os.PathLike) -> TimestampFile:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SyncError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SyncError(f"{path}: is a folder, expected a 'timestamp data' text file") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise SyncError(f"{path}: UTF-16 text; save it as UTF-8")
    if b"\x00" in data:
        raise SyncError(f"{path}: binary data (NUL bytes), expected a 'timestamp data' text file")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first line
    except UnicodeDecodeError as e:
        raise SyncError(f"{path}: not UTF-8 text (byte {e.start}), expected a 'timestamp data' text file") from None
    return parse_timestamp_text(text, str(path))


def format_association(first: TimestampFile, second: TimestampFile, i: np.ndarray, j: np.ndarray, offset: float, first_only: bool = False) -> str:
    """associate.py's printed lines ('%f %s %f %s', the second time minus the offset), newline-terminated."""
    ta = first.t[i].tolist()
    if first_only:
        return "".join("%f %s\n" % (x, first.data[k]) for x, k in zip(ta, i.tolist()))
    tb = (second.t[j] - offset).tolist()  # float64 b - offset, as Python computes it
    return "".join("%f %s %f %s\n" % (x, first.data[k], y, second.data[m]) for x, k, y, m in zip(ta, i.tolist(), tb, j.tolist()))


def associate_files(first_path, second_path, offset: float = 0.0, max_difference: float = 0.02, first_only: bool = False) -> tuple[str, int, int, int]:
    """TUM association of two files. Returns (text, n_pairs, n_first, n_second)."""
    for name, v in (("--offset", offset), ("--max-difference", max_difference)):
        if not math.isfinite(v):
            raise SyncError(f"{name} {v}: expected a finite number of seconds")
    if not max_difference > 0:
        raise SyncError(f"max difference must be > 0 seconds, got {max_difference}")
    first = read_timestamp_file(first_path)
    second = read_timestamp_file(second_path)
    i, j = greedy_associate(first.t, second.t, float(max_difference), float(offset))
    return format_association(first, second, i, j, float(offset), first_only), len(i), len(first.t), len(second.t)


# --- sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePair:
    """One phone frame's partner: sensor_index None = unmatched; gap_ns = sensor - phone host time."""

    phone_index: int
    sensor_index: int | None
    gap_ns: int | None
    ramp: int = -1
    step: int = -1


@dataclass(frozen=True)
class SyncResult:
    phone: ClockModel
    sensor: ClockModel
    pairs: list[FramePair]
    mode: str
    max_gap_ns: int
    sensor_period_ns: int
    stats: dict = field(default_factory=dict)
    path: Path | None = None
    quality: dict = field(default_factory=dict)  # {"phone"|"sensor": {"verdict", "reasons"}}

    @property
    def suspect(self) -> dict[str, list[str]]:
        """{clock: reasons} of the clocks whose verdict is not ok."""
        return {k: [str(r) for r in v.get("reasons", [])] for k, v in self.quality.items()
                if isinstance(v, dict) and v.get("verdict", "ok") != "ok"}

    @property
    def matched(self) -> list[FramePair]:
        return [p for p in self.pairs if p.sensor_index is not None]


DROPOUT_PERIODS = 1.5  # a sensor spacing longer than this many periods has frames missing


def _sensor_gaps(t_host: np.ndarray, idx: np.ndarray, period: float) -> list[dict]:
    """Sensor frames missing in the stream: spacing > DROPOUT_PERIODS periods. t_host (N,) sorted."""
    d = np.diff(t_host)
    out = []
    for k in np.flatnonzero(d > DROPOUT_PERIODS * period):
        out.append({"after_sensor_index": int(idx[k]), "before_sensor_index": int(idx[k + 1]), "missing_frames": int(round(d[k] / period)) - 1, "gap_ns": int(d[k])})
    return out


def default_max_gap_ns(sensor_host_ns: np.ndarray, period: int) -> int:
    """Half the longest sensor spacing that is no dropout (<= DROPOUT_PERIODS periods, as
    _sensor_gaps counts them), rounded up. Half the median period alone left a sliver in the middle
    of every spacing a little longer than the median (device stamps jitter by ~0.2 ms) where a phone
    frame between two regular sensor frames had no partner; pairs across a dropout stay refused."""
    d = np.diff(np.asarray(sensor_host_ns, dtype=np.int64))
    regular = d[d <= DROPOUT_PERIODS * period]
    longest = int(regular.max()) if regular.size else period
    return -(-longest // 2)


def pair_frames(
    phone_host_ns: np.ndarray,
    sensor_host_ns: np.ndarray,
    mode: str = "many-to-one",
    max_gap_ns: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Pair phone frames with sensor frames in host time.

    phone_host_ns: (N,) int64; sensor_host_ns: (M,) int64 strictly increasing.
    Returns j (N,) sensor position or -1, gap_ns (N,) int64 (sensor - phone, 0 where unmatched),
    max_gap_ns used (default: half the longest sensor spacing that is no dropout, see
    default_max_gap_ns) and the period (median spacing, ns)."""
    if mode not in MODES:
        raise SyncError(f"association mode {mode!r}: expected one of {', '.join(MODES)}")
    s = np.asarray(sensor_host_ns, dtype=np.int64)
    p = np.asarray(phone_host_ns, dtype=np.int64)
    period = int(np.median(np.diff(s))) if s.size >= 2 else 0
    if max_gap_ns is None:
        if period <= 0:
            raise SyncError("cannot estimate the sensor frame period (fewer than 2 sensor frames); give a max gap")
        max_gap_ns = default_max_gap_ns(s, period)
    base = int(min(s.min(initial=0), p.min(initial=0))) if s.size and p.size else 0
    if mode == "many-to-one":
        j, gap = nearest_associate(p - base, s - base, int(max_gap_ns))
    else:
        order = np.argsort(p, kind="stable")
        jj, gg = one_to_one_associate(p[order] - base, s - base, int(max_gap_ns))
        j = np.empty_like(jj)
        gap = np.empty_like(gg)
        j[order] = jj
        gap[order] = gg
    return j, gap.astype(np.int64), int(max_gap_ns), period


def _session_latency_ns(session) -> int:
    """The fixed (minimum) sensor latency the session states, else 0.

    Looked up as session.json "sensor_latency_ns" or rig.sensor.latency_ns (a recorder that knows
    its device's transport latency, or the simulator's configured minimum, writes it). With 0 the
    sensor model maps device time to capture time + the smallest latency seen (the envelope)."""
    key = "sensor_latency_ns" if "sensor_latency_ns" in session.meta else "rig.sensor.latency_ns"
    v = session.meta.get("sensor_latency_ns", session.rig_entry("sensor").get("latency_ns", 0))
    try:
        ns = int(v or 0)
    except (TypeError, ValueError, OverflowError):
        raise SyncError(f"{session.path}/session.json: {key} {v!r} is not an integer") from None
    if abs(ns) > MAX_SENSOR_LATENCY_NS:
        raise SyncError(f"{session.path}/session.json: {key} {ns} is out of range: expected a latency within "
                        f"+-{MAX_SENSOR_LATENCY_NS} ns (+-1000 ms, as --sensor-latency-ms allows)")
    return ns


def stated_counts(meta: dict) -> dict[str, int | None]:
    """How many phone frames, sensor frames and probes session.json says were written (None = unsaid).

    From the recorder's stats; a complete session without them is held to its focus schedule."""
    rec = meta.get("recorder") if isinstance(meta.get("recorder"), dict) else {}
    out: dict[str, int | None] = {}
    for key, name in (("phone", "phone_frames"), ("sensor", "sensor_frames_written"), ("probes", "probes")):
        v = rec.get(name)
        # a count that is no whole number (a hand-edited nan, inf, 2.5, "x") says nothing
        whole = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
        out[key] = int(v) if whole and not isinstance(v, bool) else None
    sched = meta.get("focus_schedule")
    if out["phone"] is None and meta.get("status") == "complete" and isinstance(sched, dict):
        steps, ramps = sched.get("steps"), sched.get("ramps")
        if isinstance(steps, int) and isinstance(ramps, int) and steps > 0 and ramps > 0:
            out["phone"] = steps * ramps
    return out


def quality_of(session, pfit: PhoneFit, sfit: SensorFit, probes: np.ndarray) -> dict:
    """sync.json's "quality": a verdict per clock from the fits and the session's own account."""
    sf = session.sensor_frames
    counts = {"phone": len(session.phone_frames), "sensor": len(sf), "probes": len(probes)}
    extra = session_reasons(session.status, session.effective_status, counts, stated_counts(session.meta))
    sensor_span = int(sf[-1].t_device_ns - sf[0].t_device_ns) if sf else 0
    probe_span = int(probes[-1, 1] - probes[0, 1]) if len(probes) else 0
    return {
        "phone": verdict(phone_reasons(pfit.model, probe_span) + extra["phone"]),
        "sensor": verdict(sensor_reasons(sfit.model, sensor_span) + extra["sensor"]),
    }


def _check_ramp_times(session) -> None:
    """A ramp's frames are taken one after another: t_phone_ns must increase with the step. A repeated or
    earlier time (an edited or damaged index) would pair that frame with the depth of another moment."""
    last: dict[int, object] = {}
    for r in sorted(session.phone_frames, key=lambda r: (r.ramp, r.step)):
        prev = last.get(r.ramp)
        if prev is not None and r.t_phone_ns <= prev.t_phone_ns:
            raise SyncError(f"{session.path}/phone/frames.csv: frame {r.index} (ramp {r.ramp}, step {r.step}) has "
                            f"t_phone_ns {r.t_phone_ns}, not after frame {prev.index} (step {prev.step}, "
                            f"{prev.t_phone_ns}): a ramp's frames are taken one after another; an edited or damaged index?")
        last[r.ramp] = r


def compute_sync(session, mode: str = "many-to-one", max_gap_ns: int | None = None, sensor_latency_ns: int | None = None) -> tuple[dict, PhoneFit, SensorFit]:
    """Fit both clocks of a loaded Session and pair its frames. Returns (sync.json dict, fits)."""
    path = session.path
    if session.rig_entry("sensor").get("kind") == "none":  # import-opencamera: one camera, one clock
        raise SyncError(f"{path}: a phone-only session (no sensor recorded): there are no two clocks to sync; its "
                        "photos need no sync (dfdcap predict and align take them as they are)")
    probes = session.probes()
    live = " yet: the session is still being recorded" if session.effective_status == "recording" else ""
    if len(probes) == 0:
        raise SyncError(f"{path}/clock/phone_probes.csv: no clock probes{live or '; the phone clock cannot be fitted'}")
    if not session.sensor_frames:
        raise SyncError(f"{path}/sensor/frames.csv: no sensor frames{live}")
    if not session.phone_frames:
        raise SyncError(f"{path}/phone/frames.csv: no phone frames{live}")
    _check_ramp_times(session)
    pfit = fit_phone_clock(probes, source=str(path / "clock" / "phone_probes.csv"))
    # sensor rows in file order are the arrival order; Session sorts by index (the same for a recorder)
    sf = session.sensor_frames
    latency = _session_latency_ns(session) if sensor_latency_ns is None else int(sensor_latency_ns)
    sfit = fit_sensor_clock(
        np.array([r.t_device_ns for r in sf], dtype=np.int64),
        np.array([r.t_host_ns for r in sf], dtype=np.int64),
        latency_ns=latency,
        source=str(path / "sensor" / "frames.csv"),
    )
    sensor_host = sfit.model.to_host_ns(np.array([r.t_device_ns for r in sf], dtype=np.int64))
    pf = session.phone_frames
    phone_host = pfit.model.to_host_ns(np.array([r.t_phone_ns for r in pf], dtype=np.int64))
    j, gap, max_gap, period = pair_frames(phone_host, sensor_host, mode, max_gap_ns)
    sidx = np.array([r.index for r in sf], dtype=np.int64)

    pairs = []
    for k, r in enumerate(pf):
        m = int(j[k]) >= 0
        pairs.append({
            "phone_index": r.index,
            "sensor_index": int(sidx[j[k]]) if m else None,
            "gap_ns": int(gap[k]) if m else None,
            "ramp": r.ramp,
            "step": r.step,
        })
    matched = j >= 0
    ag = np.abs(gap[matched]).astype(np.float64)
    stats = {
        "n_phone_frames": len(pf),
        "n_sensor_frames": len(sf),
        "n_matched": int(matched.sum()),
        "n_unmatched": int((~matched).sum()),
        "unmatched_phone_indices": [p["phone_index"] for p in pairs if p["sensor_index"] is None],
        "n_sensor_frames_shared": int(len(j[matched]) - len(np.unique(j[matched]))),
        "abs_gap_ns": {
            "mean": float(ag.mean()) if ag.size else None,
            "median": float(np.median(ag)) if ag.size else None,
            "p95": float(np.percentile(ag, 95)) if ag.size else None,
            "max": int(ag.max()) if ag.size else None,
        },
        "sensor_frame_gaps": _sensor_gaps(sensor_host, sidx, period) if period > 0 else [],
        "phone_span_ns": int(phone_host.max() - phone_host.min()),
        "probe_span_ns": int(probes[-1, 0] - probes[0, 0]),
    }
    stacks = []
    ramps = sorted({p["ramp"] for p in pairs})
    for rmp in ramps:
        sel = [p for p in pairs if p["ramp"] == rmp]
        gaps = [abs(p["gap_ns"]) for p in sel if p["gap_ns"] is not None]
        stacks.append({"ramp": rmp, "n_frames": len(sel), "n_matched": len(gaps), "max_abs_gap_ns": max(gaps) if gaps else None})
    res_s = sfit.residual_ns
    doc = {
        "schema": SYNC_SCHEMA,
        "phone": pfit.model.to_dict(),
        "sensor": sfit.model.to_dict(),
        "association": {"mode": mode, "max_gap_ns": max_gap, "sensor_period_ns": period},
        "pairs": pairs,
        "stats": stats,
        "stacks": stacks,
        "residuals": {
            "phone": {
                "t_phone_ns": probes[:, 1].tolist(),
                "rtt_ns": pfit.rtt_ns.tolist(),
                "residual_ns": np.round(pfit.residual_ns).astype(np.int64).tolist(),
                "used": pfit.used.astype(int).tolist(),
            },
            "sensor": {
                "above_envelope_ns": {q: float(np.percentile(res_s, float(q))) for q in ("0", "5", "50", "95", "100")},
            },
        },
        "quality": quality_of(session, pfit, sfit, probes),
    }
    return doc, pfit, sfit


def inputs_sha256(session) -> dict[str, str | None]:
    """sha256 of what sync reads in a session: its three index files (None where absent) and the
    SESSION_KEYS and rig.sensor.latency_ns of session.json, as sorted compact JSON."""
    out: dict[str, str | None] = {}
    for rel in SYNC_INPUTS:
        p = session.path / rel
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    meta = {k: session.meta.get(k) for k in SESSION_KEYS}
    meta["rig.sensor.latency_ns"] = session.rig_entry("sensor").get("latency_ns")
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str)
    out["session.json"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def check_inputs(doc: dict, session, path: Path) -> None:
    """SyncError when sync.json's inputs_sha256 (if it has one) differs from the session's files now."""
    stored = doc.get("inputs_sha256")
    if not isinstance(stored, dict):
        return  # written before dfdcap recorded its inputs
    now = inputs_sha256(session)
    for rel, sha in now.items():
        if rel in stored and stored[rel] != sha:
            raise SyncError(f"{path} is out of date with {session.path / rel}: run `dfdcap sync {session.path}` again")


def sync_session(
    session_dir: str | os.PathLike,
    mode: str = "many-to-one",
    max_gap_ns: int | None = None,
    sensor_latency_ns: int | None = None,
) -> SyncResult:
    """Fit the phone and sensor clocks of a session, pair the frames, write <session>/sync.json."""
    from dfdcap.capture.session import Session

    session_dir = Path(session_dir)
    try:
        session = Session(session_dir)
    except SyncError:
        raise
    except DfdcapError as e:
        raise SyncError(str(e)) from None
    inputs = inputs_sha256(session)
    doc, pfit, sfit = compute_sync(session, mode, max_gap_ns, sensor_latency_ns)
    doc["inputs_sha256"] = inputs
    if doc["stats"]["n_matched"] == 0:  # a sync.json that pairs nothing would only fail build-dataset later
        raise SyncError(f"{session_dir}: 0 of {doc['stats']['n_phone_frames']} phone frames paired with a sensor frame "
                        f"within {doc['association']['max_gap_ns'] / 1e6:g} ms; {_why_unpaired(session, pfit, sfit)} "
                        "(sync.json left as it was)")
    atomic_write_json(session_dir / "sync.json", doc)
    return _result_from_doc(doc, session_dir / "sync.json")


def _whole(v, what: str, path: Path, none: bool = False) -> int | None:
    """A JSON whole number (None where `none`); SyncError naming the entry otherwise (int(6.7) would be 6)."""
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise SyncError(f"{path}: {what} {v!r} is not a whole number")
    return int(v)


def previous_settings(doc, path: Path) -> tuple[str, int | None, int | None]:
    """The pairing mode, max gap (ns) and sensor latency (ns) an earlier sync.json was computed with,
    for recomputing it the same way (`dfdcap report SESSION`); a hand-edited or foreign value is a
    SyncError naming the key, never a traceback or a nonsense setting (a max gap of 0 pairs nothing)."""
    if not isinstance(doc, dict):
        raise SyncError(f"{path}: expected a JSON object, found {type(doc).__name__}; run `dfdcap sync` again")
    a, s = doc.get("association", {}), doc.get("sensor", {})
    for key, v in (("association", a), ("sensor", s)):
        if not isinstance(v, dict):
            raise SyncError(f"{path}: {key} {v!r} is not an object; run `dfdcap sync` again")
    mode = a.get("mode", "many-to-one")
    if mode not in MODES:
        raise SyncError(f"{path}: association.mode {mode!r}: expected one of {', '.join(MODES)}")
    gap = _whole(a.get("max_gap_ns"), "association.max_gap_ns", path, none=True)
    if gap is not None and not 0 < gap <= MAX_GAP_NS:
        raise SyncError(f"{path}: association.max_gap_ns {gap} is out of range: expected 1 to {MAX_GAP_NS} ns (60 s)")
    latency = _whole(s.get("latency_ns"), "sensor.latency_ns", path, none=True)
    if latency is not None and abs(latency) > MAX_SENSOR_LATENCY_NS:
        raise SyncError(f"{path}: sensor.latency_ns {latency} is out of range: expected a latency within "
                        f"+-{MAX_SENSOR_LATENCY_NS} ns (+-1000 ms)")
    return mode, gap, latency


def _why_unpaired(session, pfit: PhoneFit, sfit: SensorFit) -> str:
    """Why no phone frame found a partner: the streams do not overlap in host time, or how near they come."""
    p = np.sort(pfit.model.to_host_ns(np.array([r.t_phone_ns for r in session.phone_frames], dtype=np.int64)))
    s = sfit.model.to_host_ns(np.array([r.t_device_ns for r in session.sensor_frames], dtype=np.int64))
    if p[-1] < s.min() or p[0] > s.max():
        return (f"the phone frames ({p[0] / 1e9:.3f}-{p[-1] / 1e9:.3f} s host time) and the sensor frames "
                f"({s.min() / 1e9:.3f}-{s.max() / 1e9:.3f} s) do not overlap: check clock/phone_probes.csv and "
                "the sensor latency")
    nearest = min(int(np.min(np.abs(s - t))) for t in p)
    return f"the nearest pair is {nearest / 1e6:.3f} ms apart: try --max-gap-ms {max(nearest / 1e6 * 1.5, 0.001):.3g}"


def _result_from_doc(doc: dict, path: Path) -> SyncResult:
    try:
        if doc.get("schema") != SYNC_SCHEMA:
            raise SyncError(f"{path}: schema {doc.get('schema')!r}, this dfdcap reads {SYNC_SCHEMA}")
        pairs = [FramePair(_whole(p["phone_index"], f"pairs[{k}].phone_index", path),
                           _whole(p["sensor_index"], f"pairs[{k}].sensor_index", path, none=True),
                           _whole(p["gap_ns"], f"pairs[{k}].gap_ns", path, none=True),
                           _whole(p.get("ramp", -1), f"pairs[{k}].ramp", path), _whole(p.get("step", -1), f"pairs[{k}].step", path))
                 for k, p in enumerate(doc["pairs"])]
        a = doc["association"]
        return SyncResult(ClockModel.from_dict(doc["phone"]), ClockModel.from_dict(doc["sensor"]), pairs,
                          a["mode"], int(a["max_gap_ns"]), int(a["sensor_period_ns"]), doc.get("stats", {}), path,
                          dict(doc.get("quality", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise SyncError(f"{path}: malformed sync file ({type(e).__name__}: {e})") from None


def read_sync(session_dir: str | os.PathLike, session=None) -> SyncResult:
    """Load <session>/sync.json (run `dfdcap sync SESSION` first).

    With the loaded Session, sync.json must be up to date with its files (check_inputs) and its pairs
    must name the session's frames (check_pairs)."""
    path = Path(session_dir) / "sync.json"
    if not path.is_file():
        raise SyncError(f"{path}: not found; run `dfdcap sync {session_dir}` first")
    try:
        doc = read_json(path)
    except DfdcapError as e:
        raise SyncError(str(e)) from None
    result = _result_from_doc(doc, path)
    if session is not None:
        check_inputs(doc, session, path)
        check_pairs(result, session)
    return result


def check_pairs(sync: SyncResult, session) -> None:
    """Every pair of sync.json names a phone frame and a sensor frame (or none) the session has, each
    phone frame once: a hand-edited or foreign sync.json is refused, never silently cut short."""
    phone = {r.index for r in session.phone_frames}
    sensor = {r.index for r in session.sensor_frames}
    seen: set[int] = set()
    for k, p in enumerate(sync.pairs):
        if p.phone_index not in phone:
            raise SyncError(f"{sync.path}: pairs[{k}] references phone frame {p.phone_index} of {len(phone)} "
                            f"(phone/frames.csv has no such index); run `dfdcap sync {session.path}` again")
        if p.phone_index in seen:
            raise SyncError(f"{sync.path}: pairs[{k}] pairs phone frame {p.phone_index} a second time; "
                            f"run `dfdcap sync {session.path}` again")
        seen.add(p.phone_index)
        if p.sensor_index is not None and p.sensor_index not in sensor:
            raise SyncError(f"{sync.path}: pairs[{k}] references sensor frame {p.sensor_index} of {len(sensor)} "
                            f"(sensor/frames.csv has no such index); run `dfdcap sync {session.path}` again")
