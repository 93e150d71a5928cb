"""Reading conversation data: JSONL files and `datasets` folders, in runs of records that keep their file's line
numbers, each record validated (`eosguard.data.conversations.parse_record`), nothing dropped without being counted.

A bad record raises `DataError` naming the file and line, or, with `skip_invalid=True`, is counted in
`LoadReport.skipped` with its reason. `record_runs` cuts inputs into runs any process can read (`eosguard prepare`'s
workers do); `load_tools` reads a file of function schemas (a run's default `tools`).

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/   # a bad record: its file and line, exit 2
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from eosguard.base.errors import DataError
from eosguard.data.conversations import Conversation, parse_record, parse_tools
from eosguard.data.preferences import Preference, is_preference, parse_preference


@dataclass
class LoadReport:
    """How many records were read, used and skipped, and why each skip happened."""

    read: int = 0
    used: int = 0
    skipped: list[tuple[str, int | None, str]] = field(default_factory=list)

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(reason for _, _, reason in self.skipped)

    def summary(self) -> str:
        text = f"read {self.read} records, used {self.used}, skipped {len(self.skipped)}"
        if self.skipped:
            reasons = ", ".join(f"{n}× {r}" for r, n in self.skipped_by_reason.most_common())
            text += f" ({reasons})"
        return text


def _reason_key(message: str) -> str:
    """A short, countable reason: the message without its position prefix."""
    prefix, sep, rest = message.partition(": ")
    return rest if sep and prefix.startswith(("messages[", "conversations[", "message ")) else message


def _decode_line(raw: bytes, lineno: int) -> Any | Exception:
    """One JSONL line as a record, or the reason it is not one (None: a blank line, never counted as data)."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark is not part of the record
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ValueError(f"invalid UTF-8 at byte {exc.start}")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return ValueError(f"malformed JSON: {exc.msg} (column {exc.colno})")


def _open_dataset(path: Path) -> Any:
    """A `datasets` folder (save_to_disk), a folder of Parquet files, or one Parquet file, as one `Dataset`
    (memory-mapped; opened once per process while the path is unchanged)."""
    return _open_dataset_at(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _open_dataset_at(name: str, mtime_ns: int) -> Any:
    import datasets

    path = Path(name)

    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        else:
            files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
            if not files:
                raise DataError("folder holds neither a saved `datasets` dataset nor Parquet files", path=str(path))
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot read dataset: {exc}", path=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"dataset has splits {list(ds)}, none named 'train'", path=str(path))
        ds = ds["train"]
    return ds


# A dataset's other columns are ignored.
_RECORD_KEYS = ("messages", "conversations", "tools", "prompt", "chosen", "rejected", "completion", "label")


def _is_dataset(path: Path) -> bool:
    return path.is_dir() or path.suffix == ".parquet"


@dataclass(frozen=True)
class RecordRun:
    """`lines` consecutive lines of one input, from line `first_line`: of a JSONL file, the bytes [start, stop);
    of a dataset, the rows [start, stop) (row k is line k + 1). Runs can be read in any process and in any order;
    their records keep their file's line numbers."""

    path: str
    start: int
    stop: int
    first_line: int
    lines: int

    def records(self) -> Iterator[tuple[int, Any | Exception]]:
        """(line or row number, record or the reason it is not one); blank lines are skipped."""
        p = Path(self.path)
        if _is_dataset(p):
            rows = _open_dataset(p).select(range(self.start, self.stop))
            for i, row in enumerate(rows, start=self.first_line):
                # other columns are ignored; an empty (None) column is absent, so both shapes validate row by row
                yield i, {k: v for k, v in row.items() if k in _RECORD_KEYS and v is not None}
            return
        with p.open("rb") as handle:
            handle.seek(self.start)
            lines = handle.read(self.stop - self.start).split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the newline that ends the last line
        for lineno, raw in enumerate(lines, start=self.first_line):
            record = _decode_line(raw, lineno)
            if record is not None:
                yield lineno, record


def record_runs(paths: str | Path | Iterable[str | Path], size: int = 1000) -> list[RecordRun]:
    """The inputs cut, in order, into runs of `size` lines (rows); a missing or unreadable input is a DataError."""
    runs = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(path)
        if not p.exists():
            raise DataError("no such file or folder", path=str(path))
        if _is_dataset(p):
            n = len(_open_dataset(p))
            runs += [RecordRun(str(path), a, min(a + size, n), a + 1, min(size, n - a)) for a in range(0, n, size)]
            continue
        offset, line, run_start, run_line = 0, 0, 0, 1
        with p.open("rb") as handle:
            for raw in handle:
                offset += len(raw)
                line += 1
                if line % size == 0:
                    runs.append(RecordRun(str(path), run_start, offset, run_line, line + 1 - run_line))
                    run_start, run_line = offset, line + 1
        if offset > run_start:
            runs.append(RecordRun(str(path), run_start, offset, run_line, line + 1 - run_line))
    return runs


def iter_records(path: str | Path) -> Iterator[tuple[int, Any | Exception]]:
    """Raw records of a data file or folder, with their line (or row) numbers."""
    for run in record_runs(path, size=10_000):
        yield from run.records()


def _conversation(record: Any, path: str, line: int) -> Conversation:
    messages, tools = parse_record(record)
    return Conversation(messages=messages, source=path, line=line, tools=tools)


def _preference(record: Any, path: str, line: int) -> Preference:
    return replace(parse_preference(record), source=path, line=line)


def validate_records(
    path: str,
    records: Iterable[tuple[int, Any | Exception]],
    *,
    skip_invalid: bool,
    report: LoadReport,
    preferences: bool = False,
) -> Iterator[Any]:
    """Records to validated conversations (`preferences`: to `Preference` records); a bad one raises DataError
    (file:line) unless `skip_invalid`, which counts it in `report` with its reason."""
    parse = _preference if preferences else _conversation
    first: tuple[str, int] | None = None  # preferences: the file's format, read off its first good record, and line
    for lineno, record in records:
        report.read += 1
        try:
            if isinstance(record, Exception):
                raise record
            item = parse(record, path, lineno)
            if preferences:
                first = _same_format(item, lineno, first)
        except ValueError as exc:
            if not skip_invalid:
                raise DataError(
                    str(exc),
                    path=path,
                    line=lineno,
                    hint="fix the record, or pass --skip-invalid to skip and count such records",
                ) from None
            report.skipped.append((path, lineno, _reason_key(str(exc))))
            continue
        report.used += 1
        yield item


def _format(item: Any) -> str:
    text = "conversational" if item.conversational else "plain-text"
    return f"{'a paired' if item.kind == 'paired' else 'an unpaired'} {text} record"


def _same_format(item: Any, lineno: int, first: tuple[str, int] | None) -> tuple[str, int]:
    """One preference format a file: TRL reads paired or unpaired, messages or text, off the first record and fails
    on the rest (a pyarrow error without a line), so a record of another format is refused here, with both lines."""
    found = _format(item)
    if first is not None and found != first[0]:
        raise ValueError(
            f"{found}, where line {first[1]} is {first[0]}: one format a file (TRL reads it off the first)"
        )
    return first or (found, lineno)


def check_loaded(report: LoadReport, paths: Iterable[str | Path]) -> None:
    """An input without records, or whose every record was invalid, is an error (whatever skip_invalid says)."""
    names = ", ".join(str(p) for p in paths)
    if not report.read:
        raise DataError("no records found (the file is empty)", path=names)
    if not report.used:
        raise DataError(f"every record was invalid: {report.summary()}", path=names)


def iter_conversations(
    paths: str | Path | Iterable[str | Path],
    *,
    skip_invalid: bool = False,
    report: LoadReport | None = None,
    preferences: bool = False,
) -> Iterator[Any]:
    """Validated conversations (`preferences`: preference records) one at a time (memory stays flat on large
    files); counts go into `report`.

    Raises DataError at the first bad record unless `skip_invalid`. An empty input, or one whose every record is
    invalid, is an error either way.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    report = report if report is not None else LoadReport()
    for path in paths:
        yield from validate_records(
            str(path), iter_records(path), skip_invalid=skip_invalid, report=report, preferences=preferences
        )
    check_loaded(report, paths)


DataKind = Literal["conversations", "paired", "unpaired"]


def data_kind(paths: str | Path | Iterable[str | Path]) -> DataKind:
    """What the inputs hold, read off the first record of each: conversations, preference pairs (DPO) or unpaired
    completions (KTO). Inputs that disagree are an error naming both; an input with no record at all is left to
    the readers, which say so."""
    found: dict[DataKind, str] = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        record = next((r for _, r in iter_records(path) if isinstance(r, dict)), None)
        if record is None:
            continue
        kind: DataKind = "conversations"
        if is_preference(record):
            kind = "unpaired" if "completion" in record else "paired"
        found.setdefault(kind, str(path))
    if len(found) > 1:
        raise DataError("the inputs mix " + " and ".join(f"{k} ({p})" for k, p in found.items()) + ": one kind a run")
    return next(iter(found), "conversations")


def load_preferences(
    paths: str | Path | Iterable[str | Path], *, skip_invalid: bool = False, report: LoadReport | None = None
) -> tuple[list[Preference], LoadReport]:
    """Read and validate every preference record of one or more files (`eosguard.data.preferences`)."""
    report = report if report is not None else LoadReport()
    return list(iter_conversations(paths, skip_invalid=skip_invalid, report=report, preferences=True)), report


def load_conversations(
    paths: str | Path | Iterable[str | Path], *, skip_invalid: bool = False, report: LoadReport | None = None
) -> tuple[list[Conversation], LoadReport]:
    """Read and validate every record of one or more files (see `iter_conversations`).

    Example:
        >>> import json, tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
        >>> _ = f.write(json.dumps({"messages": [{"role": "user", "content": "Hi"},
        ...                                      {"role": "assistant", "content": "Hello!"}]}) + "\\n"); f.close()
        >>> convs, rep = load_conversations(f.name)
        >>> convs[0].messages[1].content, rep.summary()
        ('Hello!', 'read 1 records, used 1, skipped 0')
    """
    report = report if report is not None else LoadReport()
    return list(iter_conversations(paths, skip_invalid=skip_invalid, report=report)), report


def load_tools(path: str | Path) -> tuple[dict[str, Any], ...]:
    """A JSON file holding a list of function schemas (the default `tools` of a run); DataError naming the file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no such file", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read tool schemas: {exc}", path=str(path)) from None
    try:
        return parse_tools(raw)
    except ValueError as exc:
        raise DataError(str(exc), path=str(path)) from None
