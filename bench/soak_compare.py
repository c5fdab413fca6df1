"""`python -m bench.soak_compare DIR [FIRST LAST]`: what grew between two tracemalloc snapshots
written by `bench.soak_trace` (default: the second and the last), by line, largest first."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path


def main(argv: list[str]) -> int:
    snaps = sorted(Path(argv[0]).glob("*.snap"))
    if len(snaps) < 2:
        raise SystemExit(f"need two snapshots in {argv[0]}, found {len(snaps)}")
    first, last = (
        (Path(a) for a in argv[1:3]) if len(argv) >= 3 else (snaps[1 % len(snaps)], snaps[-1])
    )
    old = tracemalloc.Snapshot.load(str(first))
    new = tracemalloc.Snapshot.load(str(last))
    print(f"{first.name} -> {last.name}")
    for stat in new.compare_to(old, "traceback")[:15]:
        print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
        for line in stat.traceback.format()[-8:]:
            print("    " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
