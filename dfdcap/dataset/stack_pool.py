"""Samples built by worker processes and handed back in job order through shared memory.

Why shared memory: a 1008x756 stack of 5 frames with its CoC maps is ~30 MB; pickled through a
pipe it cost the parent and the worker more CPU than building it (0.2 s a stack on a 2-core VM).
Workers are forked, so they inherit the sessions, the calibration and the compiled kernels, and
an anonymous shared mapping made before the fork: a ring of slots, one sample each. A worker
writes its sample's arrays into the slot its job names; only the split, focus distances,
provenance and the small `extra` arrays (per-slice alignment) travel through the pipe. The consumer takes samples in job order, and a slot gets its
next job when the consumer asks for the next sample, so a sample is valid until then.
Without "fork" (not Linux) or with one worker, samples are made in this process.
"""

from __future__ import annotations

import mmap
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from dfdcap.dataset.h5io import Sample
from dfdcap.errors import DatasetError

MakeSample = Callable[[object], tuple[str, Sample]]
_ALIGN = 64
_SLOT_BUDGET_BYTES = 1 << 30  # slots beyond workers + 1 only while they fit in this


@dataclass(frozen=True)
class SampleLayout:
    """Shapes every sample of a build has: S frames of H x W, with or without CoC maps."""

    frames: int
    height: int
    width: int
    coc: bool

    def arrays(self) -> list[tuple[str, tuple, np.dtype]]:
        S, H, W = self.frames, self.height, self.width
        out = [("stack", (S, H, W, 3), np.dtype(np.uint8)), ("depth_m", (H, W), np.dtype(np.float32)),
               ("mask", (H, W), np.dtype(np.bool_))]
        return out + ([("coc_px", (S, H, W), np.dtype(np.float32))] if self.coc else [])

    @property
    def nbytes(self) -> int:
        return sum(-(-int(np.prod(shape)) * dt.itemsize // _ALIGN) * _ALIGN for _, shape, dt in self.arrays())


class _Slots:
    """n sample-sized slots in one anonymous shared mapping (shared with processes forked later)."""

    def __init__(self, layout: SampleLayout, n: int):
        self.layout, self.n = layout, n
        populate = getattr(mmap, "MAP_POPULATE", 0)  # all pages at once, not one fault each
        self.buf = mmap.mmap(-1, max(1, n * layout.nbytes), flags=mmap.MAP_SHARED | populate)

    def views(self, k: int) -> dict[str, np.ndarray]:
        out, off = {}, k * self.layout.nbytes
        for name, shape, dt in self.layout.arrays():
            size = int(np.prod(shape)) * dt.itemsize
            out[name] = np.frombuffer(self.buf, dt, int(np.prod(shape)), off).reshape(shape)
            off += -(-size // _ALIGN) * _ALIGN
        return out


_make: MakeSample | None = None  # in a worker: set by _init_worker
_slots: _Slots | None = None


def _keep_heap() -> None:
    """glibc: serve large arrays from the heap and keep freed memory there. A fresh worker would
    otherwise map (and page-fault in) every image and map anew for every stack: on a VM that
    doubled its CPU time. The worker is short-lived, so holding on to its peak memory is fine."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


def _init_worker(make: MakeSample, slots: _Slots) -> None:
    """Keep what the jobs need; leave Ctrl-C to the parent (it stops the pool; no worker tracebacks)."""
    global _make, _slots
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_heap()
    _make, _slots = make, slots


def _run_job(job: object, slot: int) -> tuple[str, np.ndarray, dict, dict]:
    split, sample = _make(job)
    views = _slots.views(slot)
    for name, shape, dt in _slots.layout.arrays():
        value = getattr(sample, name)
        if value is None or value.shape != shape:
            raise DatasetError(f"build-dataset: sample {name} is {None if value is None else value.shape}, "
                               f"expected {shape} like every sample of this build")
        np.copyto(views[name], value, casting="unsafe")
    return split, np.asarray(sample.focus_m, np.float32), sample.provenance, dict(sample.extra)


def ordered_samples(make: MakeSample, jobs: list, workers: int, layout: SampleLayout,
                    before_fork: Callable[[], None] | None = None) -> Iterator[tuple[str, Sample]]:
    """make(job) for every job, in job order, computed by `workers` forked processes (at most as
    many jobs ahead as there are slots). before_fork: run once first (e.g. compile kernels, so
    that the workers inherit them). Each sample is valid until the next one is requested."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for job in jobs:
            yield make(job)
        return
    if before_fork:
        before_fork()
    n_slots = min(len(jobs), max(workers + 1, min(2 * workers, _SLOT_BUDGET_BYTES // max(1, layout.nbytes))))
    slots = _Slots(layout, n_slots)
    ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_worker, initargs=(make, slots))
    try:
        futures = [ex.submit(_run_job, job, k) for k, job in enumerate(jobs[:n_slots])]
        for k in range(len(jobs)):
            try:
                split, focus_m, provenance, extra = futures[k].result()
            except BrokenProcessPool as e:
                raise DatasetError(f"build-dataset: a worker process died ({e}); try --workers 1") from None
            futures[k] = None
            views = slots.views(k % n_slots)
            yield split, Sample(views["stack"], focus_m, views["depth_m"], views["mask"], views.get("coc_px"), provenance, extra)
            if k + n_slots < len(jobs):  # the consumer is done with slot k % n_slots
                futures.append(ex.submit(_run_job, jobs[k + n_slots], k % n_slots))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
