"""Rows of token ids another tool wrote, read in batches as flat arrays: what the doctor audits (`doctor --prepared`).

Formats: a `datasets` folder (`save_to_disk`: one Dataset, or a DatasetDict whose every split is read: axolotl's
`dataset_prepared_path/<hash>`, LLaMA-Factory's `tokenized_path`, eosguard's `prepare`), parquet files, JSONL files,
Arrow files (stream or file format); a folder of parquet / JSONL / Arrow files is read file by file.

Columns: `input_ids`, and what says which tokens are trained: `labels` (-100 where not trained: axolotl,
LLaMA-Factory, eosguard), else `assistant_masks` and / or `completion_mask` (TRL: its collator keeps the ids where
every mask is 1 and sets the other labels to -100), else nothing (then a collator builds the labels:
`eosguard.checks.rows`). `attention_mask` marks padding (0) and,
in LLaMA-Factory's `neat_packing`, the packed sequences (1, 2, 3, ...); `position_ids` restarting at 0 marks them in
other packed rows.

A batch holds flat arrays (every row's tokens end to end, `offsets` where each row starts), never Python lists per
token, so 100,000 rows read in seconds, and never more than one batch in memory.

Run as:
    eosguard doctor --prepared PATH --tokenizer TOKENIZER
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import DataError

IGNORE = -100
LABEL_COLUMNS = ("labels", "assistant_masks", "completion_mask")
COLUMNS = ("input_ids", *LABEL_COLUMNS, "attention_mask", "position_ids")
SUFFIXES = (".parquet", ".jsonl", ".json", ".arrow")


@dataclass
class RowBatch:
    """Consecutive rows of one source: `ids`, `labels` (None: none written), `attention`, `positions` flat, row i at
    `offsets[i]:offsets[i + 1]`; `first`: the index of row 0 in its source; `lines`: JSONL line numbers (else None);
    `label_source`: the column the labels came from."""

    source: str
    first: int
    offsets: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    attention: np.ndarray | None
    positions: np.ndarray | None
    label_source: str | None
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def where(self, row: int) -> str:
        """A row's place, for a report: `file:line`, or `source` row N."""
        if self.lines is not None:
            return f"{self.source}:{self.lines[row]}"
        return f"{self.source} row {self.first + row}"

    def row(self, i: int) -> dict[str, list[int]]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        out = {"input_ids": self.ids[a:b].tolist()}
        if self.labels is not None:
            out["labels"] = self.labels[a:b].tolist()
        if self.attention is not None:
            out["attention_mask"] = self.attention[a:b].tolist()
        return out


def sources(path: str | Path) -> list[Path]:
    """The files or the `datasets` folder that `path` names (a folder of data files: each file, sorted)."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or folder", path=str(p))
    if p.is_file() or is_datasets_folder(p):
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
    if not files:
        raise DataError(
            "neither a `datasets` folder (save_to_disk) nor a folder of parquet, JSONL or Arrow files", path=str(p)
        )
    return files


def is_datasets_folder(p: Path) -> bool:
    """A folder `save_to_disk` wrote (one dataset, or a DatasetDict)."""
    return p.is_dir() and any((p / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def read_rows(path: str | Path, batch_rows: int = 4096) -> Iterator[RowBatch]:
    """Every row of `path` (see the module doc), in batches of at most `batch_rows` rows."""
    for src in sources(path):
        if src.is_dir():
            yield from _datasets_folder(src, batch_rows)
        elif src.suffix == ".parquet":
            yield from _parquet(src, batch_rows)
        elif src.suffix in (".jsonl", ".json"):
            yield from _jsonl(src, batch_rows)
        else:
            yield from _arrow(src, batch_rows)


def _datasets_folder(folder: Path, batch_rows: int) -> Iterator[RowBatch]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # a damaged folder: datasets' own message, with the folder's name
        raise DataError(f"not a readable `datasets` folder: {exc}", path=str(folder)) from None
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, ds in splits:
        name = f"{folder}[{split}]" if split is not None else str(folder)
        table = ds.with_format("arrow")
        for first in range(0, len(ds), batch_rows):
            yield _from_table(table[first : first + batch_rows], name, first)


def _parquet(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(str(path))
    except Exception as exc:
        raise DataError(f"not a readable parquet file: {exc}", path=str(path)) from None
    columns = [c for c in COLUMNS if c in f.schema_arrow.names]
    first = 0
    for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
        yield _from_table(batch, str(path), first)
        first += batch.num_rows


def _arrow(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(source).read_all()
    except Exception as exc:
        raise DataError(f"not a readable Arrow file: {exc}", path=str(path)) from None
    for first in range(0, table.num_rows, batch_rows):
        yield _from_table(table.slice(first, batch_rows), str(path), first)


def _jsonl(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    first = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg}", path=str(path), line=n) from None
            if not isinstance(row, dict) or not isinstance(row.get("input_ids"), list):
                raise DataError("a row needs an `input_ids` list of token ids", path=str(path), line=n)
            rows.append(row)
            lines.append(n)
            if len(rows) == batch_rows:
                yield _from_dicts(rows, str(path), first, lines)
                first += len(rows)
                rows, lines = [], []
    if rows:
        yield _from_dicts(rows, str(path), first, lines)


def _flat(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> Arrow column as (flat values, offsets), without a Python object per token."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise TypeError(f"a list of token ids per row, not {column.type}")
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.int64)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def _from_table(table: Any, source: str, first: int) -> RowBatch:
    names = table.column_names if hasattr(table, "column_names") else table.schema.names
    if "input_ids" not in names:
        raise DataError(f"no `input_ids` column (columns: {', '.join(names)})", path=source)
    try:
        ids, offsets = _flat(table.column("input_ids"))
        columns = {c: _flat(table.column(c))[0] for c in COLUMNS[1:] if c in names}
    except TypeError as exc:
        raise DataError(str(exc), path=source) from None
    return _batch(source, first, offsets, ids, columns, None)


def _from_dicts(rows: list[dict[str, Any]], source: str, first: int, lines: list[int]) -> RowBatch:
    lengths = np.array([len(r["input_ids"]) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.fromiter((t for r in rows for t in r["input_ids"]), dtype=np.int64, count=int(offsets[-1]))
    columns = {}
    for c in COLUMNS[1:]:
        have = [c in r for r in rows]
        if any(have) and not all(have):  # a column some rows have and others lack: never dropped silently
            n = lines[have.index(False)]
            raise DataError(f"no `{c}`, which other rows of this file have", path=source, line=n)
        if all(have):
            for r, n in zip(rows, lines, strict=True):
                if len(r[c]) != len(r["input_ids"]):
                    raise DataError(f"`{c}` and `input_ids` differ in length", path=source, line=n)
            columns[c] = np.fromiter((t for r in rows for t in r[c]), dtype=np.int64, count=int(offsets[-1]))
    return _batch(source, first, offsets, ids, columns, lines)


def _batch(
    source: str, first: int, offsets: np.ndarray, ids: np.ndarray, columns: dict[str, np.ndarray], lines: Any
) -> RowBatch:
    """Labels from the first label column present (TRL's masks: the ids where the mask is 1, -100 elsewhere)."""
    for c in ("attention_mask", "position_ids", *LABEL_COLUMNS):
        if c in columns and len(columns[c]) != len(ids):
            raise DataError(f"`{c}` and `input_ids` differ in length in some row", path=source)
    labels, label_source = columns.get("labels"), "labels" if "labels" in columns else None
    masks = [c for c in LABEL_COLUMNS[1:] if c in columns]
    if labels is None and masks:  # TRL's collator: the ids, -100 wherever either mask is 0
        keep = np.logical_and.reduce([columns[c] != 0 for c in masks])
        labels, label_source = np.where(keep, ids, IGNORE), " + ".join(masks)
    return RowBatch(
        source,
        first,
        offsets,
        ids,
        labels,
        columns.get("attention_mask"),
        columns.get("position_ids"),
        label_source,
        lines,
    )


__all__ = ["IGNORE", "RowBatch", "is_datasets_folder", "read_rows", "sources"]
