"""Helpers shared by tests."""

from __future__ import annotations

from collections.abc import Sequence


def trained_runs(mask: Sequence[bool]) -> list[list[int]]:
    """The trained positions split into maximal runs: [F, T, T, F, T] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    cur: list[int] = []
    for i, m in enumerate(mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])
