"""Collators: pad input ids and labels *separately*, labels by position, never by comparing ids.

`PadCollator` pads a batch of examples to the longest one (optionally to a multiple of N), on the side it is
given: input_ids with the pad id, labels with IGNORE_INDEX, attention_mask 1 on real tokens. Because labels are
padded by position, a pad id equal to the end-of-turn id cannot erase a real `<|im_end|>` label (the bug that
`labels[labels == pad_token_id] = -100` causes in transformers' DataCollatorForLanguageModeling).

`PackedCollator` is the padding-free mode: every example of the batch is laid end to end in one row, with
`position_ids` restarting at 0 for each example and no attention_mask, which transformers' attention turns into a
block-diagonal causal mask (no token attends across examples). The first token of each example gets label
IGNORE_INDEX, so the last token of one example is never asked to predict the next example (no cross-example loss).

Run as:
    eosguard train CONFIG.yaml   # padded or packed rows, labels by position
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from eosguard.base.errors import EosguardError
from eosguard.chat.render import IGNORE_INDEX
from eosguard.training.packing import example_positions, pack_examples


def _as_list(x: Any) -> list[int]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _require_labels(features: Sequence[dict[str, Any]]) -> None:
    if any("labels" not in f for f in features):
        raise EosguardError(
            "eosguard collators need explicit 'labels' in every example",
            hint="render examples with eosguard.ChatRenderer: labels come from explicit spans, never from ids",
        )


def pad_sequences(
    rows: Sequence[Sequence[int]], value: int, length: int, side: Literal["left", "right"]
) -> torch.Tensor:
    """Stack `rows` into a (len(rows), length) tensor, filling with `value` on `side`."""
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        t = torch.as_tensor(row, dtype=torch.long)
        if side == "right":
            out[i, : len(t)] = t
        else:
            out[i, length - len(t) :] = t
    return out


@dataclass
class PadCollator:
    """Pad a batch of {"input_ids", "labels"} examples.

    Example:
        >>> c = PadCollator(pad_token_id=-8, padding_side="left")
        >>> b = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [-100]}])
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist()
        ([[5, 6, 7], [-8, -8, 5]], [[-100, 6, 7], [-100, -100, -100]], [[1, 1, 1], [0, 0, 1]])
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"
    pad_to_multiple_of: int | None = None
    label_pad_id: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise EosguardError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        _require_labels(features)
        ids = [_as_list(f["input_ids"]) for f in features]
        labels = [_as_list(f["labels"]) for f in features]
        for i, (a, b) in enumerate(zip(ids, labels, strict=True)):
            if len(a) != len(b):
                raise EosguardError(f"example {i}: {len(a)} input_ids but {len(b)} labels")
        length = max(len(a) for a in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        side = self.padding_side
        return {
            "input_ids": pad_sequences(ids, self.pad_token_id, length, side),
            "labels": pad_sequences(labels, self.label_pad_id, length, side),
            "attention_mask": pad_sequences([[1] * len(a) for a in ids], 0, length, side),
        }


@dataclass
class PackedCollator:
    """Padding-free batches: `position_ids` restarting per example, no attention_mask.

    A feature may be one example or a pre-packed row carrying its own "position_ids" (see eosguard.training.packing).
    `one_row=True` lays every feature of the batch end to end in one row: right for FlashAttention's variable-length
    kernels, which never build a mask. `one_row=False` keeps each feature its own row, the shorter ones filled to the
    longest with `pad_token_id` as a segment of their own (positions restart, labels -100): right for attention that
    takes a mask (SDPA, eager), whose cost grows with the square of the row length and the block-diagonal mask built
    from position_ids. Needs the model called with use_cache=False: with a KV cache, transformers skips the
    per-example mask and examples would attend to each other (`eosguard.training.trainer.fit` turns the cache off;
    tests/training/test_collate.py proves both layouts equal padded batches).

    Example:
        >>> f = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
        >>> b = PackedCollator()(f)
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["position_ids"].tolist()
        ([[5, 6, 7, 8, 9]], [[-100, 6, 7, -100, 9]], [[0, 1, 2, 0, 1]])
        >>> b = PackedCollator(one_row=False)(f)
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["position_ids"].tolist()
        ([[5, 6, 7], [8, 9, 0]], [[-100, 6, 7], [-100, 9, -100]], [[0, 1, 2], [0, 1, 0]])
    """

    label_pad_id: int = IGNORE_INDEX
    one_row: bool = True
    pad_token_id: int = 0  # only fills rows (one_row=False); never a label, never attended to by real tokens
    pack_to: int | None = None
    """Pack the batch's own examples into rows of at most this many tokens first (best-fit-decreasing): the step
    keeps exactly the examples a padded batch would hold, without its padding (`packing: batch`)."""

    def _row(self, f: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
        f_ids, f_labels = _as_list(f["input_ids"]), _as_list(f["labels"])
        f_pos = _as_list(f["position_ids"]) if "position_ids" in f else example_positions([len(f_ids)])
        # Position 0 starts an example: nothing before it in the same example predicts it.
        labels = [self.label_pad_id if p == 0 else y for p, y in zip(f_pos, f_labels, strict=True)]
        return f_ids, labels, f_pos

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        _require_labels(features)
        if self.pack_to is not None:
            features = pack_examples(features, self.pack_to)
        rows = [self._row(f) for f in features]
        if self.one_row:
            rows = [tuple([x for r in rows for x in r[k]] for k in range(3))]  # type: ignore[misc]
        width = max(len(ids) for ids, _, _ in rows)
        ids_out, labels_out, pos_out = [], [], []
        for ids, labels, pos in rows:
            fill = width - len(ids)
            ids_out.append(ids + [self.pad_token_id] * fill)
            labels_out.append(labels + [self.label_pad_id] * fill)
            pos_out.append(pos + list(range(fill)))  # the filler is a segment of its own: nothing attends into it
        return {
            "input_ids": torch.tensor(ids_out, dtype=torch.long),
            "labels": torch.tensor(labels_out, dtype=torch.long),
            "position_ids": torch.tensor(pos_out, dtype=torch.long),
        }
