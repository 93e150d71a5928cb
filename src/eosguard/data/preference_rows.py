"""Preference rows of token ids another tool wrote, read in batches as flat arrays: what the doctor audits
(`doctor --prepared`) when a folder holds preference columns instead of `input_ids`.

Formats and reading: those of `eosguard.data.tokenized` (a `datasets` folder, parquet, JSONL, Arrow), by its one rule
(`eosguard.data.columns`: each column a list of integer ids per row, no nulls; a row that breaks it is `DataError`
naming the file, the row or line, the column and every column the file has). Column layouts:

- paired (DPO, ORPO, CPO, IPO): `prompt_ids`, `chosen_ids`, `rejected_ids`: what TRL's `DPOTrainer._prepare_dataset`
  writes (beside its text columns, which are not read) and what `eosguard prepare` writes for pairs;
- unpaired (KTO): `prompt_ids`, `completion_ids`, and `label` (true: desirable) where present;
- pairwise rows of ids and labels: `chosen_input_ids` / `chosen_labels`, `rejected_input_ids` / `rejected_labels`
  (LLaMA-Factory's `stage: dpo` rows in its `tokenized_path`; what TRL's experimental ORPO / CPO `tokenize_row`
  writes): each side's prompt is its leading labels at -100 (both sides must share it), its completion the rest;
  read as paired rows.

A folder of preference records in text or messages (`prompt`, `chosen`, `rejected` as strings or lists: what TRL
takes before it tokenizes, and what axolotl saves for `rl:` runs) is not rows of ids: `preference_kind` says so, and
the doctor reads it with `--data` instead.

Run as:
    eosguard doctor --tokenizer PATH --prepared dpo_rows/ [--max-length 1024]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eosguard.base.errors import DataError
from eosguard.data.columns import IGNORE, RowPlaces, bad_row, check_lengths
from eosguard.data.tokenized import TOKENS, Layout, column_names, from_dicts, read_rows

Kind = Literal["paired", "unpaired"]
Found = Literal["paired", "unpaired", "pairwise", "records"]
SIDES: dict[Kind, tuple[str, ...]] = {"paired": ("chosen", "rejected"), "unpaired": ("completion",)}
PAIRWISE = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


@dataclass
class PreferenceBatch(RowPlaces):
    """Consecutive preference rows of one source: the prompts flat (`prompt`, row i at
    `prompt_offsets[i]:prompt_offsets[i + 1]`), each side's completions flat the same way (`sides`: chosen and
    rejected, or the one completion), `label` (unpaired: desirable or not; None: no such column); `first`, `lines`,
    `columns` as `RowBatch` has them; `dropped`: rows TRL dropped before it made these (the prompt alone fills
    max_length); `too_long`: records eosguard dropped (too long to hold whole once no earlier turn is left to drop)."""

    source: str
    first: int
    kind: Kind
    prompt: np.ndarray
    prompt_offsets: np.ndarray
    sides: dict[str, tuple[np.ndarray, np.ndarray]]
    label: np.ndarray | None
    lines: list[int] | None
    columns: tuple[str, ...]
    dropped: int = 0
    too_long: int = 0

    def __len__(self) -> int:
        return len(self.prompt_offsets) - 1

    def prompt_ids(self, row: int) -> np.ndarray:
        return self.prompt[self.prompt_offsets[row] : self.prompt_offsets[row + 1]]

    def completion_ids(self, side: str, row: int) -> np.ndarray:
        flat, offsets = self.sides[side]
        return flat[offsets[row] : offsets[row + 1]]


def _build(kind: Kind) -> Any:
    """The layout's builder for one kind."""

    def build(
        source: str,
        first: int,
        cols: dict[str, tuple[np.ndarray, np.ndarray]],
        scalars: dict[str, np.ndarray],
        lines: list[int] | None,
        names: tuple[str, ...],
    ) -> PreferenceBatch:
        prompt, offsets = cols["prompt_ids"]
        sides = {s: cols[f"{s}_ids"] for s in SIDES[kind]}
        return PreferenceBatch(source, first, kind, prompt, offsets, sides, scalars.get("label"), lines, names)

    return build


def _pairwise(
    source: str,
    first: int,
    cols: dict[str, tuple[np.ndarray, np.ndarray]],
    scalars: dict[str, np.ndarray],
    lines: list[int] | None,
    names: tuple[str, ...],
) -> PreferenceBatch:
    """LLaMA-Factory's pairwise rows: each side split where its labels start (see the module doc)."""
    prompts: list[np.ndarray] = []
    sides: dict[str, list[np.ndarray]] = {"chosen": [], "rejected": []}
    for side in sides:
        ids, offsets = cols[f"{side}_input_ids"]
        check_lengths(source, first, lines, offsets, {f"{side}_labels": cols[f"{side}_labels"]}, names)
        labels = cols[f"{side}_labels"][0]
        for r in range(len(offsets) - 1):
            a, b = int(offsets[r]), int(offsets[r + 1])
            trained = np.flatnonzero(labels[a:b] != IGNORE)
            cut = int(trained[0]) if len(trained) else b - a
            if side == "chosen":
                prompts.append(ids[a : a + cut])
            elif len(prompts[r]) != cut or (prompts[r] != ids[a : a + cut]).any():
                message = "the chosen and rejected rows start with different prompts (their labels at -100)"
                raise bad_row(source, first, lines, r, message, names)
            sides[side].append(ids[a + cut : b])
    prompt, offsets = _flat(prompts)
    return PreferenceBatch(
        source, first, "paired", prompt, offsets, {s: _flat(v) for s, v in sides.items()}, None, lines, names
    )


def _flat(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).astype(np.int64)
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return flat, offsets


PAIRED = Layout("prompt_ids", ("prompt_ids", "chosen_ids", "rejected_ids"), ("prompt_ids", "chosen_ids",
                "rejected_ids"), _build("paired"))  # fmt: skip
UNPAIRED = Layout(
    "prompt_ids", ("prompt_ids", "completion_ids"), ("prompt_ids", "completion_ids"), _build("unpaired"), ("label",)
)
LLAMAFACTORY_PAIRWISE = Layout("chosen_input_ids", PAIRWISE, PAIRWISE, _pairwise)
LAYOUTS: dict[str, Layout] = {"paired": PAIRED, "unpaired": UNPAIRED, "pairwise": LLAMAFACTORY_PAIRWISE}


def kind_of(names: tuple[str, ...] | list[str]) -> Found | None:
    """Which preference layout these columns hold (None: none; "records": preference records, not ids)."""
    have = set(names)
    if {"prompt_ids", "chosen_ids", "rejected_ids"} <= have:
        return "paired"
    if {"prompt_ids", "completion_ids"} <= have:
        return "unpaired"
    if set(PAIRWISE) <= have:
        return "pairwise"
    if {"chosen", "rejected"} <= have or {"prompt", "completion", "label"} <= have:
        return "records"
    return None


def preference_kind(path: str | Path) -> Found | None:
    """What the first source of `path` holds, read off its columns (None: no preference layout)."""
    return kind_of(column_names(path))


def read_preference_rows(path: str | Path, tokens: int = TOKENS) -> Iterator[PreferenceBatch]:
    """Every preference row of `path` in batches (the layout read off its first source's columns)."""
    found = preference_kind(path)
    if found is None or found == "records":
        raise DataError(
            "no preference rows of ids (prompt_ids with chosen_ids and rejected_ids, or with completion_ids)",
            path=str(path),
            hint="preference records in text or messages are read with --data (--collator trl: as TRL prepares them)",
        )
    yield from read_rows(path, tokens, LAYOUTS[found])


def preference_batch(
    rows: list[dict[str, Any]], source: str, lines: list[int] | None, kind: Kind, dropped: int = 0, too_long: int = 0
) -> PreferenceBatch:
    """Preference rows held in memory (TRL's prepared dataset, eosguard's `PreferenceRow.columns()`) as one batch, read
    by the same rule as a file's; `dropped`, `too_long`: records left out before these were made (`PreferenceBatch`)."""
    if not rows:
        none = np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
        return PreferenceBatch(source, 0, kind, *none, {s: none for s in SIDES[kind]}, None, [], (), dropped, too_long)
    found = kind_of(list(rows[0]))
    if found != kind:
        raise DataError(f"no {kind} preference rows of ids (columns: {', '.join(rows[0])})", path=source)
    batch = from_dicts(rows, source, lines, LAYOUTS[found])
    batch.dropped, batch.too_long = dropped, too_long
    return batch


__all__ = [
    "SIDES",
    "Kind",
    "PreferenceBatch",
    "kind_of",
    "preference_batch",
    "preference_kind",
    "read_preference_rows",
]
