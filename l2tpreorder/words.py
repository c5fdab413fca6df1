"""Counts in words, as every report of ours prints them (replay's, status's)."""

from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """`1 frame`, `2 frames`, `1,234 frames`."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
