"""Benchmark harness for l2tpreorder (issue 6): load generator, sink, baseline forwarder, runner.

Run from the project root: `make bench` (or `python -m bench.run`). Results are ratios against
baselines measured in the same run, because absolute numbers on a shared 2-core VM are noise.
"""
