"""Keep every core busy (one spinning process each) until killed: the load of `make test-loaded`.

Usage: python scripts/busy_loop.py [--workers N]   (default: all cores). SIGTERM/SIGINT stop it
and its workers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys


def spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    n = ap.parse_args().workers
    workers = [mp.Process(target=spin, daemon=True) for _ in range(n)]
    for w in workers:
        w.start()

    def stop(*_):
        for w in workers:
            w.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"busy_loop: {n} spinning processes (pid {os.getpid()})", flush=True)
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
