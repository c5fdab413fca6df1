"""`python -m bench.soak_trace DIR EVERY -- run --config FILE`: the relay under tracemalloc.

A thread writes a snapshot to DIR/NNNN.snap every EVERY seconds, so `bench.soak_compare` can
say which lines of ours hold the memory that grew between two of them. tracemalloc slows the
relay several times over: for finding what grows, never for the figure.
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from pathlib import Path

from l2tpreorder.cli import main


def snapshots(where: Path, every: float) -> None:
    n = 0
    while True:
        time.sleep(every)  # a period, not synchronisation
        tracemalloc.take_snapshot().dump(str(where / f"{n:04d}.snap"))
        n += 1


if __name__ == "__main__":
    where, every = Path(sys.argv[1]), float(sys.argv[2])
    where.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(4)
    threading.Thread(target=snapshots, args=(where, every), daemon=True).start()
    sys.exit(main(sys.argv[4:]))
