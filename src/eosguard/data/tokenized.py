"""Rows of token ids another tool wrote, read in batches as flat arrays: what the doctor audits (`doctor --prepared`).

Formats: a `datasets` folder (`save_to_disk`: one Dataset, or a DatasetDict whose every split is read: axolotl's
`dataset_prepared_path/<hash>`, LLaMA-Factory's `tokenized_path`, eosguard's `prepare`), parquet files, JSONL files,
Arrow files (stream or file format); any other folder is searched for them (axolotl's `last_run_prepared` root: each
hash-named `datasets` folder in it read as one, its metadata never as rows).

Columns: `input_ids`, and what says which tokens are trained: `labels` (-100 where not trained: axolotl,
LLaMA-Factory, eosguard), else `assistant_masks` and / or `completion_mask` (TRL: its collator keeps the ids where
every mask is 1 and sets the other labels to -100), else nothing (then a collator builds the labels:
`eosguard.checks.rows`). `attention_mask` marks padding (0) and, in LLaMA-Factory's `neat_packing`, the packed
sequences (1, 2, 3, ...); `position_ids` restarting at 0 marks them in other packed rows.

One rule for every format (`eosguard.data.columns`): each of these columns is held row by row against `input_ids`
(one integer per position, as many as the row's ids, no nulls), else `DataError` naming the file, the row or line,
the column and every column the file has; labels written shifted by one are read unshifted (`RowBatch.shifted`).

A batch holds flat arrays (every row's tokens end to end, `offsets` where each row starts), never Python lists per
token, and at most `TOKENS` tokens (a longer row alone), so 32k-token rows read as easily as short ones, and never more
than one batch in memory.

Run as:
    eosguard doctor --prepared PATH --tokenizer TOKENIZER
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import DataError
from eosguard.data.columns import (
    IGNORE,
    RowPlaces,
    arrow_column,
    arrow_scalar,
    bad_row,
    check_lengths,
    jsonl_column,
    jsonl_scalar,
    unshift,
)

LABEL_COLUMNS = ("labels", "assistant_masks", "completion_mask")
COLUMNS = ("input_ids", *LABEL_COLUMNS, "attention_mask", "position_ids")
SUFFIXES = (".parquet", ".jsonl", ".json", ".arrow")
METADATA = frozenset({"dataset_info.json", "state.json", "dataset_dict.json"})  # what save_to_disk writes beside rows
TOKENS = 1 << 20  # the tokens a batch holds at most (a longer row is a batch alone)
PARQUET_ROWS = 256  # rows read from a parquet file at a time, then gathered into batches of TOKENS


@dataclass
class RowBatch(RowPlaces):
    """Consecutive rows of one source: `ids`, `labels` (None: none written), `attention`, `positions` flat, row i at
    `offsets[i]:offsets[i + 1]`; `first`: the index of row 0 in its source; `lines`: JSONL line numbers (else None);
    `label_source`: the column the labels came from; `shifted`: rows whose labels were written shifted by one and are
    held here unshifted; `columns`: every column the source has (for messages)."""

    source: str
    first: int
    offsets: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    attention: np.ndarray | None
    positions: np.ndarray | None
    label_source: str | None
    lines: list[int] | None = None
    shifted: int = 0
    columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> dict[str, list[int]]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        out = {"input_ids": self.ids[a:b].tolist()}
        if self.labels is not None:
            out["labels"] = self.labels[a:b].tolist()
        if self.attention is not None:
            out["attention_mask"] = self.attention[a:b].tolist()
        return out


@dataclass(frozen=True)
class Layout:
    """What one kind of rows holds: `key`, the column every row has (its lengths size the batches), the list columns
    read (`columns`) and the one-value-a-row ones (`scalars`), those a source must have (`required`), and `build`,
    which makes one batch of them: `build(source, first, lists, scalars, lines, names)`, `lists` holding each list
    column as (flat values, offsets) and `scalars` each scalar column as an array, both read by the one rule."""

    key: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    build: Callable[..., Any]
    scalars: tuple[str, ...] = ()


def sources(path: str | Path) -> list[Path]:
    """The files or `datasets` folders that `path` names: itself, or those found in it (sorted; a `datasets` folder
    read as one, never its files one by one)."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or folder", path=str(p))
    if p.is_file() or is_datasets_folder(p):
        return [p]
    found = list(_found(p))
    if not found:
        raise DataError(
            "neither a `datasets` folder (save_to_disk) nor a folder of them or of parquet, JSONL or Arrow files",
            path=str(p),
        )
    return found


def _found(folder: Path) -> Iterator[Path]:
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from [child] if is_datasets_folder(child) else _found(child)
        elif child.suffix in SUFFIXES and child.name not in METADATA:
            yield child


def is_datasets_folder(p: Path) -> bool:
    """A folder `save_to_disk` wrote (one dataset, or a DatasetDict)."""
    return p.is_dir() and any((p / name).exists() for name in METADATA)


def read_rows(path: str | Path, tokens: int = TOKENS, layout: Layout | None = None) -> Iterator[Any]:
    """Every row of `path` (see the module doc), in batches of at most `tokens` tokens: `RowBatch`es, or the batches
    another `layout` builds (`eosguard.data.preference_rows`)."""
    layout = layout or ROWS
    for src in sources(path):
        if src.is_dir():
            yield from _datasets_folder(src, tokens, layout)
        elif src.suffix == ".parquet":
            yield from _parquet(src, tokens, layout)
        elif src.suffix in (".jsonl", ".json"):
            yield from _jsonl(src, tokens, layout)
        else:
            yield from _arrow(src, tokens, layout)


def column_names(path: str | Path) -> tuple[str, ...]:
    """The columns of the first source `path` names (a JSONL file: its first row's keys), read as `read_rows` reads
    it, without its rows."""
    src = sources(path)[0]
    if src.suffix in (".jsonl", ".json"):
        try:
            with src.open("rb") as f:
                row = json.loads(next((raw for raw in f if raw.strip()), b"{}").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return ()  # the reader names the line
        return tuple(row) if isinstance(row, dict) else ()
    try:
        if src.is_dir():
            import datasets

            loaded = datasets.load_from_disk(str(src))
            first = next(iter(loaded.values())) if isinstance(loaded, datasets.DatasetDict) else loaded
            return tuple(first.column_names)
        if src.suffix == ".parquet":
            import pyarrow.parquet as pq

            return tuple(pq.ParquetFile(str(src)).schema_arrow.names)
    except Exception as exc:  # an unreadable source: named as its reader names it
        raise DataError(f"cannot read: {exc}", path=str(src)) from None
    return tuple(_arrow_table(src).column_names)


def _datasets_folder(folder: Path, tokens: int, layout: Layout) -> Iterator[Any]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # a damaged folder: datasets' own message, with the folder's name
        raise DataError(f"not a readable `datasets` folder: {exc}", path=str(folder)) from None
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, ds in splits:
        name = f"{folder}[{split}]" if split is not None else str(folder)
        table = ds.with_format("arrow")[0 : len(ds)]  # the memory-mapped rows (a slice: nothing copied)
        yield from _tables(table.to_batches(), table.column_names, name, tokens, layout)


def _parquet(path: Path, tokens: int, layout: Layout) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(str(path))
    except Exception as exc:
        raise DataError(f"not a readable parquet file: {exc}", path=str(path)) from None
    names = f.schema_arrow.names
    _require(names, str(path), layout)
    wanted = [c for c in (*layout.columns, *layout.scalars) if c in names]
    yield from _tables(f.iter_batches(batch_size=PARQUET_ROWS, columns=wanted), names, str(path), tokens, layout)


def _arrow_table(path: Path) -> Any:
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                return pa.ipc.open_file(source).read_all()
    except Exception as exc:
        raise DataError(f"not a readable Arrow file: {exc}", path=str(path)) from None


def _arrow(path: Path, tokens: int, layout: Layout) -> Iterator[Any]:
    table = _arrow_table(path)
    yield from _tables(table.to_batches(), table.column_names, str(path), tokens, layout)


def _require(names: Sequence[str], source: str, layout: Layout, line: int | None = None) -> None:
    missing = [c for c in layout.required if c not in names]
    if missing:
        raise DataError(f"no `{missing[0]}` column (columns: {', '.join(names) or 'none'})", path=source, line=line)


def _tables(chunks: Iterable[Any], names: Sequence[str], source: str, tokens: int, layout: Layout) -> Iterator[Any]:
    """Arrow record batches of one source, gathered or cut into batches of at most `tokens` tokens."""
    import pyarrow as pa

    _require(names, source, layout)
    wanted = [c for c in (*layout.columns, *layout.scalars) if c in names]
    first = 0
    for group in _by_tokens((c.select(wanted) for c in chunks), tokens, layout.key):
        table = pa.Table.from_batches(group)
        yield _from_table(table, source, first, tuple(names), layout)
        first += table.num_rows


def _by_tokens(chunks: Iterable[Any], tokens: int, key: str = "input_ids") -> Iterator[list[Any]]:
    """Slices of the record batches `chunks`, grouped so that each group holds at most `tokens` ids (a row longer
    than that alone); nothing copied."""
    group: list[Any] = []
    held = 0
    for chunk in chunks:
        ends = np.cumsum(_lengths(chunk, key))
        lo = 0
        while lo < len(ends):
            base = int(ends[lo - 1]) if lo else 0
            hi = int(np.searchsorted(ends, base + tokens - held, side="right"))
            if hi == lo and not group:
                hi = lo + 1  # a row longer than a whole batch: a batch of its own
            if hi > lo:
                group.append(chunk.slice(lo, hi - lo))
                held += int(ends[hi - 1]) - base
                lo = hi
            if lo < len(ends):  # the group is full
                yield group
                group, held = [], 0
    if group:
        yield group


def _lengths(chunk: Any, key: str) -> np.ndarray:
    """Each row's number of ids in column `key` (1 where it is not a list: `arrow_column` then names the row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = chunk.column(key)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        return np.ones(len(col), dtype=np.int64)
    return pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def _from_table(table: Any, source: str, first: int, names: tuple[str, ...], layout: Layout) -> Any:
    cols = {c: arrow_column(table, c, source, first, names) for c in layout.columns if c in table.column_names}
    scalars = {c: arrow_scalar(table, c, source, first, names) for c in layout.scalars if c in table.column_names}
    return layout.build(source, first, cols, scalars, None, names)


def _jsonl(path: Path, tokens: int, layout: Layout) -> Iterator[Any]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    first = held = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"invalid UTF-8 at byte {exc.start}", path=str(path), line=n) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if rows or not line.lstrip().startswith("["):
                    raise DataError(f"malformed JSON: {exc.msg}", path=str(path), line=n) from None
                row = []  # a JSON array over several lines (`to_json(lines=False)`)
            if isinstance(row, list):
                raise DataError("a JSON array: rows are read as JSON Lines, an object a line", path=str(path), line=n)
            key = layout.key
            if not isinstance(row, dict) or not isinstance(row.get(key), list):
                keys = f" (keys: {', '.join(row)})" if isinstance(row, dict) else ""
                raise DataError(f"a row needs an `{key}` list of token ids{keys}", path=str(path), line=n)
            if not rows:
                _require(list(row), str(path), layout, n)
            if rows and held + len(row[key]) > tokens:
                yield _from_dicts(rows, str(path), first, lines, layout)
                first += len(rows)
                rows, lines, held = [], [], 0
            rows.append(row)
            lines.append(n)
            held += len(row[key])
    if rows:
        yield _from_dicts(rows, str(path), first, lines, layout)


def _from_dicts(rows: list[dict[str, Any]], source: str, first: int, lines: list[int], layout: Layout) -> Any:
    cols, scalars = {}, {}
    for c in (*layout.columns, *layout.scalars):
        have = [c in r for r in rows]
        if any(have) and not all(have):  # a column some rows have and others lack: never dropped silently
            i = have.index(False)
            raise bad_row(source, first, lines, i, f"no `{c}`, which other rows of this file have", list(rows[i]))
        if all(have) and c in layout.scalars:
            scalars[c] = jsonl_scalar(rows, c, source, first, lines)
        elif all(have):
            cols[c] = jsonl_column(rows, c, source, first, lines)
    return layout.build(source, first, cols, scalars, lines, tuple(rows[0]))


def _batch(
    source: str,
    first: int,
    cols: dict[str, tuple[np.ndarray, np.ndarray]],
    scalars: dict[str, np.ndarray],
    lines: list[int] | None,
    names: tuple[str, ...],
) -> RowBatch:
    """Every column held row by row against `input_ids`; labels from the first label column present (TRL's masks:
    the ids where every mask is 1, -100 elsewhere), unshifted where they were written shifted."""
    ids, offsets = cols.pop("input_ids")
    check_lengths(source, first, lines, offsets, cols, names)
    values = {c: v for c, (v, _) in cols.items()}
    labels, label_source = values.get("labels"), "labels" if "labels" in values else None
    shifted = 0
    if labels is not None:
        labels, shifted = unshift(ids, labels, offsets)
    masks = [c for c in LABEL_COLUMNS[1:] if c in values]
    if labels is None and masks:  # TRL's collator: the ids, -100 wherever either mask is 0
        keep = np.logical_and.reduce([values[c] != 0 for c in masks])
        labels, label_source = np.where(keep, ids, IGNORE), " + ".join(masks)
    return RowBatch(
        source,
        first,
        offsets,
        ids,
        labels,
        values.get("attention_mask"),
        values.get("position_ids"),
        label_source,
        lines,
        shifted,
        names,
    )


ROWS = Layout("input_ids", COLUMNS, ("input_ids",), _batch)  # SFT rows: ids and what says which are trained


def from_dicts(rows: list[dict[str, Any]], source: str, lines: list[int] | None, layout: Layout | None = None) -> Any:
    """Rows held in memory (a list of dicts, as another tool returns them) as one batch, by the same rule as a
    file's (`lines`: the line or row each came from; None: numbered from 0)."""
    return _from_dicts(rows, source, 0, lines if lines is not None else list(range(len(rows))), layout or ROWS)


__all__ = [
    "IGNORE",
    "ROWS",
    "Layout",
    "RowBatch",
    "column_names",
    "from_dicts",
    "is_datasets_folder",
    "read_rows",
    "sources",
    "unshift",
]
