"""Where things are in the flat token arrays of a `RowBatch` (`eosguard.checks.rows` audits with them): a pattern's
matches inside each sequence, the sequences packed in rows, the next event after each position, the points inside a set
of ranges; and the control tokens a template opens turns with (what makes a row the template's own format).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.data.tokenized import RowBatch


def match(ids: np.ndarray, seq_first: np.ndarray, pattern: list[int], at: np.ndarray | None = None) -> np.ndarray:
    """Positions where `pattern` starts and ends inside one sequence (`seq_first`: where each sequence starts); `at`:
    the positions of its first token, where already found.

    >>> match(np.array([1, 2, 1, 2, 1]), np.array([0, 3]), [1, 2]).tolist()  # the one at 2 crosses into sequence 1
    [0]
    """
    k, n = len(pattern), len(ids)
    if k == 0 or n < k:
        return np.zeros(0, dtype=np.int64)
    at = np.flatnonzero(ids == pattern[0]) if at is None else at
    at = at[at <= n - k]
    for j in range(1, k):
        at = at[ids[at + j] == pattern[j]]
    return at[next_event(seq_first, at + 1, n) >= at + k]


def positions_of(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where any of a few `values` occurs, sorted."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    hit = ids == values[0]
    for v in values[1:]:
        hit |= ids == v
    return np.flatnonzero(hit)


def in_ranges(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each point lies in one of the ranges [starts[i], ends[i]) (sorted, not overlapping).

    >>> in_ranges(np.array([0, 2, 5, 9]), np.array([2, 8]), np.array([6, 9])).tolist()
    [False, True, True, False]
    """
    i = np.searchsorted(starts, points, side="right") - 1
    inside = i >= 0
    inside[inside] = points[inside] < ends[i[inside]]
    return inside


def next_event(events: np.ndarray, positions: np.ndarray, none: int) -> np.ndarray:
    """For each position, the first event at or after it (`none` where there is none: a batch may hold no user
    header, no stop token at all).

    >>> next_event(np.array([2, 7]), np.array([0, 3, 8]), 10).tolist()
    [2, 7, 10]
    >>> next_event(np.array([], dtype=int), np.array([4]), 10).tolist()
    [10]
    """
    if len(events) == 0:
        return np.full(len(positions), none, dtype=np.int64)
    at = np.searchsorted(events, positions)
    return np.where(at < len(events), events[np.minimum(at, len(events) - 1)], none)


def sequences(batch: RowBatch) -> np.ndarray:
    """Where each sequence starts, sorted: each row, and the sequences packed in it (`position_ids` restarting at 0;
    LLaMA-Factory's neat_packing: segment ids 1, 2, 3, ... in `attention_mask`)."""
    offsets, att = batch.offsets, batch.attention
    starts = [offsets[:-1][np.diff(offsets) > 0]]
    if batch.positions is not None:
        starts.append(np.flatnonzero(batch.positions == 0))
    if att is not None and att.max(initial=0) > 1:
        starts.append(np.flatnonzero((att[1:] != att[:-1]) & (att[1:] > 0)) + 1)
    return np.unique(np.concatenate(starts)) if len(starts) > 1 else starts[0]


def rows_holding(batch: RowBatch, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of the `rows` (a mask) hold one of `tokens` (the others: False)."""
    found = np.zeros(len(batch), dtype=bool)
    if rows.any() and len(tokens):
        in_rows = np.repeat(rows, np.diff(batch.offsets))
        hit = np.flatnonzero(in_rows & np.isin(batch.ids, tokens))
        found[np.searchsorted(batch.offsets, hit, side="right") - 1] = True
    return found


def turn_marks(tokenizer: Any, template: ChatTemplate) -> set[int]:
    """The control tokens the template writes around turns (in a short chat with a system message, and without), less
    its stop tokens, and less those rows of any format may hold unless a turn header has them: the tokenizer's bos,
    eos and pad, and what it adds to any text it encodes (GLM's `[gMASK]<sop>`). SmolLM2's bos `<|im_start|>` opens
    every turn, so it counts; Llama 3's `<|begin_of_text|>` does not."""
    chats = (
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
        [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
    )
    found: set[int] = set()
    for chat in chats:
        try:
            text = template.render(chat)
        except TemplateError:
            continue
        found |= set(tokenizer(text, add_special_tokens=False)["input_ids"]) & set(template.control_ids)
    added = set(tokenizer("x")["input_ids"]) - set(tokenizer("x", add_special_tokens=False)["input_ids"])
    headers = {*template.assistant_header_ids, *template.user_header_ids}
    common = ({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} | added) - headers
    return found - common - set(template.stop_ids)


__all__ = ["in_ranges", "match", "next_event", "positions_of", "rows_holding", "sequences", "turn_marks"]
