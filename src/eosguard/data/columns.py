"""The one rule every reader of foreign rows applies (`eosguard.data.tokenized`: `datasets` folders, parquet, Arrow,
JSONL): each column is a list of integers per row (booleans in a mask), as many as the row's `input_ids`, no nulls.
A row that breaks it is `DataError` naming the file, the row (`row N`) or line (`file:N`), the column and every column
the file has (`bad_row`); never read misaligned, flattened or rounded.

Labels already shifted by one (`labels[i] == input_ids[i + 1]` wherever trained, as some pipelines save them) are
recognised row by row and put back in place (`unshift`); a row whose trained labels all equal its ids is never taken
for one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from eosguard.base.errors import DataError

IGNORE = -100
MASKS = frozenset({"assistant_masks", "completion_mask", "attention_mask"})  # booleans read as 0 / 1


def bad_row(
    source: str, first: int, lines: Sequence[int] | None, row: int, message: str, columns: Sequence[str]
) -> DataError:
    """A bad row as `DataError`: `file:line` (JSONL) or `source: row N`, the message, the source's columns."""
    has = f" (columns: {', '.join(columns)})" if columns else ""
    if lines is not None:
        return DataError(message + has, path=source, line=lines[row])
    return DataError(f"row {first + row}: {message}{has}", path=source)


class RowPlaces:
    """Where a batch's rows come from, for reports and errors: a batch class with `source`, `first` (the index of
    its row 0 in the source), `lines` (JSONL line numbers, else None) and `columns` (the source's) gets both."""

    source: str
    first: int
    lines: list[int] | None
    columns: tuple[str, ...]

    def where(self, row: int) -> str:
        """A row's place, for a report: `file:line`, or `source` row N."""
        if self.lines is not None:
            return f"{self.source}:{self.lines[row]}"
        return f"{self.source} row {self.first + row}"

    def error(self, row: int, message: str) -> DataError:
        """A bad row: its place (as `where`), the message, and the source's columns."""
        return bad_row(self.source, self.first, self.lines, row, message, self.columns)


def arrow_column(table: Any, name: str, source: str, first: int, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One Arrow column as (flat values, int32 or int64; offsets from 0): a list of integers per row (booleans in a
    mask), no nulls; else the first row that breaks it, as `DataError`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(col.type):
        col = col.cast(pa.list_(col.type.value_type))

    def bad(row: int, message: str) -> DataError:
        return bad_row(source, first, None, row, f"`{name}` {message}", names)

    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise bad(0, f"holds {col.type} values, not a list of token ids per row")
    if col.null_count:
        raise bad(_first(col.is_null()), "is null")
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets -= offsets[0]
    kind = values.type
    if not (pa.types.is_integer(kind) or (pa.types.is_boolean(kind) and name in MASKS)):
        at = _first(pc.not_equal(pc.floor(values), values)) if pa.types.is_floating(kind) else None
        at = at if at is not None else 0
        row = int(np.searchsorted(offsets, at, side="right")) - 1 if len(values) else 0
        found = f" ({values[at].as_py()!r})" if len(values) else ""
        what = "lists" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else f"{kind} values"
        raise bad(row, f"holds {what}{found}, where one integer token id per position is expected ({col.type})")
    if values.null_count:
        raise bad(int(np.searchsorted(offsets, _first(values.is_null()), side="right")) - 1, "holds a null")
    flat = values.to_numpy(zero_copy_only=False)
    return (flat if flat.dtype in (np.int32, np.int64) else flat.astype(np.int64)), offsets


def arrow_scalar(table: Any, name: str, source: str, first: int, names: Sequence[str]) -> np.ndarray:
    """One Arrow column of one boolean a row (KTO's `label`), as a numpy array; else the first row that breaks it."""
    import pyarrow as pa

    col = table.column(name)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_boolean(col.type):
        raise bad_row(source, first, None, 0, f"`{name}` holds {col.type} values, not true / false", names)
    if col.null_count:
        raise bad_row(source, first, None, _first(col.is_null()) or 0, f"`{name}` is null", names)
    return col.to_numpy(zero_copy_only=False).astype(bool)


def jsonl_scalar(rows: list[dict[str, Any]], c: str, source: str, first: int, lines: list[int]) -> np.ndarray:
    """One JSONL column of one boolean a row (KTO's `label`); else the first row that breaks it."""
    for i, r in enumerate(rows):
        if type(r[c]) is not bool:
            raise bad_row(source, first, lines, i, f"`{c}` is {json.dumps(r[c])[:40]}, not true / false", list(r))
    return np.fromiter((r[c] for r in rows), dtype=bool, count=len(rows))


def _first(flags: Any) -> int | None:
    """The first position where an Arrow boolean array is true (None: nowhere)."""
    hit = np.flatnonzero(flags.to_numpy(zero_copy_only=False))
    return int(hit[0]) if len(hit) else None


def jsonl_column(rows: list[dict[str, Any]], c: str, source: str, first: int, lines: list[int]) -> tuple[Any, Any]:
    """One JSONL column as (flat int64 values, offsets): read as numpy reads the whole batch at once, and row by row
    only to name the first bad row."""
    if all(type(r[c]) is list for r in rows):
        lengths = np.fromiter((len(r[c]) for r in rows), dtype=np.int64, count=len(rows))
        try:
            flat = np.array(list(chain.from_iterable(r[c] for r in rows)))
        except ValueError:  # nested lists of uneven lengths
            flat = None
        if flat is not None and flat.ndim == 1 and (flat.dtype.kind in "iu" or len(flat) == 0):
            return flat.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)])
        if flat is not None and flat.ndim == 1 and flat.dtype.kind == "b" and c in MASKS:
            return flat.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)])
    for i, r in enumerate(rows):
        problem = _problem(r[c], c in MASKS)
        if problem:
            raise bad_row(source, first, lines, i, f"`{c}` {problem}", list(r))
    raise AssertionError(f"{source}: `{c}` could not be read, and no row says why")  # pragma: no cover


def _problem(value: Any, mask: bool) -> str | None:
    """Why one JSONL row's column is not a list of integer token ids (None: it is one)."""
    if type(value) is not list:
        return f"is {type(value).__name__}, not a list of token ids"
    for x in value:
        if type(x) is bool and mask:
            continue
        if type(x) is not int or not -(2**63) <= x < 2**63:
            what = f"a list ({json.dumps(x)[:40]})" if isinstance(x, list) else json.dumps(x)[:40]
            return f"holds {what}, where one integer token id per position is expected"
    return None


def check_lengths(
    source: str,
    first: int,
    lines: Sequence[int] | None,
    offsets: np.ndarray,
    cols: dict[str, tuple[np.ndarray, np.ndarray]],
    names: Sequence[str],
) -> None:
    """Each column's rows as long as the ids' rows (`offsets`): else `DataError` at the first row that differs."""
    lengths = np.diff(offsets)
    for c, (_, off) in cols.items():
        differ = np.flatnonzero(np.diff(off) != lengths)
        if len(differ):
            r = int(differ[0])
            message = f"`{c}` holds {int(off[r + 1] - off[r])} tokens where `input_ids` holds {int(lengths[r])}"
            if c == "labels" and off[r + 1] - off[r] == lengths[r] - 1:
                message += (
                    " (shifted by one and cut? labels are read aligned with the ids, as transformers' models take them)"
                )
            raise bad_row(source, first, lines, r, message, names)


def out_of_vocabulary(
    ids: np.ndarray,
    labels: np.ndarray | None,
    labelled: np.ndarray,
    offsets: np.ndarray,
    vocab: int,
    name: str = "input_ids",
) -> tuple[int, str] | None:
    """The first row (and why) whose ids (column `name`) fall outside a vocabulary of `vocab` ids, or whose labels are
    neither -100 nor such an id (`labelled`: labels != -100); None when every row is in range (a few passes, no
    copy)."""
    if len(ids) == 0:
        return None
    if ids.min() < 0 or ids.max() >= vocab:
        bad, values = (ids < 0) | (ids >= vocab), ids
        what = f"`{name}` holds {{v}}: not an id of this tokenizer (ids 0-{vocab - 1}): the rows of another tokenizer?"
    elif labels is not None and (
        labels.max() >= vocab or np.count_nonzero(labels < 0) > len(labels) - np.count_nonzero(labelled)
    ):
        bad, values = labelled & ((labels < 0) | (labels >= vocab)), labels
        what = f"`labels` holds {{v}}: neither -100 (not trained) nor an id of this tokenizer (ids 0-{vocab - 1})"
    else:
        return None
    at = int(np.flatnonzero(bad)[0])
    return int(np.searchsorted(offsets, at, side="right")) - 1, what.format(v=int(values[at]))


def unshift(ids: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels with the rows that were written shifted by one (`labels[i] == ids[i + 1]` at every trained position,
    the last one untrained, and some trained label other than its own id) put back in place; and how many.

    >>> ids = np.array([5, 6, 7, 8, 5, 6, 7])
    >>> shifted = np.array([-100, 7, 8, -100, -100, 6, 7])  # row 0 shifted; row 1 as written
    >>> labels, n = unshift(ids, shifted, np.array([0, 4, 7]))
    >>> labels.tolist(), n
    ([-100, -100, 7, 8, -100, 6, 7], 1)
    """
    if np.count_nonzero(labels == ids) + np.count_nonzero(labels == IGNORE) == len(ids):  # ids >= 0: never both
        return labels, 0  # every label is -100 or its own id: nothing shifted
    trained = labels != IGNORE
    at = np.flatnonzero(trained)
    row = np.searchsorted(offsets, at, side="right") - 1
    ahead = at + 1 < offsets[row + 1]
    ahead[ahead] = labels[at[ahead]] == ids[at[ahead] + 1]
    own = labels[at] == ids[at]
    rows = len(offsets) - 1
    count = np.bincount(row, minlength=rows)
    shifted = (count > 0) & (np.bincount(row[ahead], minlength=rows) == count)
    shifted &= np.bincount(row[own], minlength=rows) < count
    if not shifted.any():
        return labels, 0
    out = np.where(np.repeat(shifted, np.diff(offsets)), IGNORE, labels)
    moved = at[shifted[row]] + 1  # each trained label put on the token it names
    out[moved] = ids[moved]
    return out, int(shifted.sum())


__all__ = [
    "IGNORE",
    "MASKS",
    "RowPlaces",
    "arrow_column",
    "arrow_scalar",
    "bad_row",
    "check_lengths",
    "jsonl_column",
    "jsonl_scalar",
    "out_of_vocabulary",
    "unshift",
]
