"""Where things are in the flat token arrays of a `RowBatch` (`eosguard.checks.rows` audits with them): a pattern's
matches inside each sequence, the sequences packed in rows, the next event after each position, the positions a set of
ranges covers; and the control tokens a template opens turns with (what makes a row the template's own format).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.data.tokenized import RowBatch


def match(ids: np.ndarray, seq_id: np.ndarray, pattern: list[int]) -> np.ndarray:
    """Positions where `pattern` starts inside one sequence."""
    k, n = len(pattern), len(ids)
    if k == 0 or n < k:
        return np.zeros(0, dtype=np.int64)
    hit = ids[: n - k + 1] == pattern[0]
    for j in range(1, k):
        hit &= ids[j : n - k + 1 + j] == pattern[j]
    hit &= seq_id[: n - k + 1] == seq_id[k - 1 :]
    return np.flatnonzero(hit)


def covered(n: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Positions inside any of the ranges [starts[i], ends[i])."""
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return np.cumsum(edges)[:n] > 0


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


def firsts(seq_id: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Where `flags` is set for the first time in its sequence."""
    at = np.flatnonzero(flags)
    first = np.zeros(len(flags), dtype=bool)
    if len(at):
        keep = np.ones(len(at), dtype=bool)
        keep[1:] = seq_id[at[1:]] != seq_id[at[:-1]]
        first[at[keep]] = True
    return first


def sequences(batch: RowBatch) -> tuple[np.ndarray, np.ndarray]:
    """Each token's sequence (rows, and the packed sequences inside them) and each sequence's end (exclusive)."""
    n, offsets, att = len(batch.ids), batch.offsets, batch.attention
    seq_start = np.zeros(n, dtype=bool)
    seq_start[offsets[:-1][np.diff(offsets) > 0]] = True
    if batch.positions is not None:
        seq_start |= batch.positions == 0
    if att is not None and att.max(initial=0) > 1:  # LLaMA-Factory's neat_packing: segment ids 1, 2, 3, ...
        seq_start[1:] |= (att[1:] != att[:-1]) & (att[1:] > 0)
    seq_first = np.flatnonzero(seq_start)
    return np.cumsum(seq_start) - 1, np.append(seq_first[1:], n)


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


__all__ = ["covered", "firsts", "match", "next_event", "sequences", "turn_marks"]
