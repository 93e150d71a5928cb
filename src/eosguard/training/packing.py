"""Padding-free packing: best-fit-decreasing bins of whole examples, position ids restarting per example.

`pack_examples` groups examples into rows of at most `max_tokens` tokens (an example is never split, so no example loses
its stop token to packing), each row carrying `position_ids` that restart at 0 for every example.
`eosguard.training.collate.PackedCollator` then lays the rows of a batch end to end; attention stays inside each
example. `choose_attention` picks the attention implementation that keeps it there at the least cost on this machine.

Run as:
    eosguard train CONFIG.yaml --set packing=rows
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any


def example_positions(lengths: Sequence[int]) -> list[int]:
    """Position ids that restart at 0 for each example: [3, 2] -> [0, 1, 2, 0, 1]."""
    return [p for n in lengths for p in range(n)]


def choose_attention(requested: str = "auto") -> tuple[str, str]:
    """(transformers attn_implementation, why) for training on packed rows.

    On a GPU with FlashAttention-2 installed, packed rows run as variable-length sequences read off position_ids, with
    no mask at all. Elsewhere SDPA with the block-diagonal mask transformers derives from position_ids: on CPU it
    measured within this machine's run-to-run noise of plain causal attention and of length-grouped padding, and
    flex_attention cannot run a backward pass on CPU in torch 2.13 (`benchmarks/bench_attention.py`).

    Example:
        >>> choose_attention("eager")
        ('eager', 'as configured')
    """
    if requested != "auto":
        return requested, "as configured"
    import torch
    from transformers.utils import is_flash_attn_2_available

    if torch.cuda.is_available() and is_flash_attn_2_available():
        return "flash_attention_2", "packed rows as variable-length sequences from position_ids, no mask"
    return "sdpa", "each packed row its own row, a block-diagonal mask from position_ids"


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity; longest first, each into the fullest bin it fits.

    Example:
        >>> best_fit_decreasing([5, 3, 4, 2, 6], capacity=8)
        [[4, 3], [0, 1], [2]]
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a bin of {capacity}")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = lengths[i]
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            space, b = free.pop(j)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
    return bins


class PackedRows(Sequence):
    """Rows of concatenated examples with `position_ids`, built when a row is read (the examples may be a lazy,
    memory-mapped dataset: only the lengths are held); see the module doc."""

    def __init__(self, examples: Sequence[dict[str, Any]], max_tokens: int, lengths: Sequence[int] | None = None):
        self.examples = examples
        self.lengths = list(lengths) if lengths is not None else [len(e["input_ids"]) for e in examples]
        self.bins = best_fit_decreasing(self.lengths, max_tokens)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, k: int) -> dict[str, list[int]]:  # type: ignore[override]
        ids: list[int] = []
        labels: list[int] = []
        for i in self.bins[k]:
            example = self.examples[i]
            ids += list(example["input_ids"])
            labels += list(example["labels"])
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": example_positions([self.lengths[i] for i in self.bins[k]]),
        }


def pack_examples(examples: Sequence[dict[str, Any]], max_tokens: int) -> list[dict[str, list[int]]]:
    """All packed rows at once (`PackedRows` builds them on demand)."""
    return list(PackedRows(examples, max_tokens))
