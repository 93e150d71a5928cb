"""Conversations in: read OpenAI-style and ShareGPT-style chat data, validate every record, lose nothing silently.

Accepted record shapes (one JSON object per line in `.jsonl`, or rows of a `datasets` Arrow/Parquet folder):

    {"messages": [{"role": "system"|"user"|"assistant", "content": str, "train": bool?}, ...]}
    {"conversations": [{"from": "system"|"human"|"gpt", "value": str, "weight": 0|1?}, ...]}

A bad record raises `DataError` naming the file and line, or, with `skip_invalid=True`, is counted in
`LoadReport.skipped` with its reason. Nothing is dropped without being counted.

Run as:
    python -m eosguard.conversations data.jsonl     # validates and prints the counts
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eosguard.errors import DataError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
SHAREGPT_ROLES: dict[str, str] = {"system": "system", "human": "user", "user": "user", "gpt": "assistant"}

# The renderer marks the template's control tokens and content slots with characters of Unicode plane 15's private
# use area (eosguard.templates.RESERVED_RANGE); content holding them is rejected so no text collides with a marker.
RESERVED_RANGE = (0xF0000, 0xFFFFD)
_RESERVED = re.compile(f"[{chr(RESERVED_RANGE[0])}-{chr(RESERVED_RANGE[1])}]")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. `train` says whether an assistant turn is supervised (None: follow the run's policy)."""

    role: Role
    content: str
    train: bool | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """A validated conversation plus where it came from (for messages that point at the source)."""

    messages: tuple[Message, ...]
    source: str = "<memory>"
    line: int | None = None

    def as_dicts(self) -> list[dict[str, str]]:
        """The messages as `[{"role", "content"}]`, the shape `tokenizer.apply_chat_template` takes."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


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


def _check_content(content: Any, where: str) -> str:
    if not isinstance(content, str):
        raise ValueError(f"{where}: content must be a string, got {type(content).__name__}")
    if not content.strip():
        raise ValueError(f"{where}: content is empty")
    if "\x00" in content:
        raise ValueError(f"{where}: content contains a NUL character")
    if _RESERVED.search(content):
        raise ValueError(f"{where}: content contains a reserved private-use character (U+F0000..U+FFFFD)")
    return content


@dataclass(frozen=True)
class _Shape:
    """The key names of one record shape; both shapes are validated by the same code."""

    list_key: str
    role_key: str
    content_key: str
    roles: dict[str, str]
    role_word: str
    flag_key: str
    flag_values: dict[Any, bool]  # accepted values of the per-message training flag -> train


OPENAI = _Shape("messages", "role", "content", {r: r for r in ROLES}, "role", "train", {True: True, False: False})
SHAREGPT = _Shape("conversations", "from", "value", SHAREGPT_ROLES, "speaker", "weight", {1: True, 0: False})


def _message(raw: Any, i: int, shape: _Shape) -> Message:
    where = f"{shape.list_key}[{i}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, got {type(raw).__name__}")
    missing = [k for k in (shape.role_key, shape.content_key) if k not in raw]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    who = raw[shape.role_key]
    if not isinstance(who, str) or who not in shape.roles:
        raise ValueError(f"{where}: unknown {shape.role_word} {who!r} (expected one of {', '.join(shape.roles)})")
    flag = raw.get(shape.flag_key)
    # `type(...) is` keeps true/false and 1/0 apart: "train": 1 and "weight": true are both errors.
    if flag is not None and not any(flag == v and type(flag) is type(v) for v in shape.flag_values):
        allowed = " or ".join(json.dumps(v) for v in shape.flag_values)
        raise ValueError(f"{where}: {shape.flag_key!r} must be {allowed}, got {flag!r}")
    train = None if flag is None else shape.flag_values[flag]
    content = _check_content(raw[shape.content_key], where)
    return Message(role=shape.roles[who], content=content, train=train)  # type: ignore[arg-type]


def _check_order(messages: list[Message]) -> None:
    """System only first; at least one assistant turn; assistant turns answer something."""
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
    if not any(m.role == "assistant" for m in messages):
        raise ValueError("no assistant turn (nothing to train)")
    first_assistant = next(i for i, m in enumerate(messages) if m.role == "assistant")
    if not any(m.role == "user" for m in messages[:first_assistant]):
        raise ValueError("the first assistant turn answers no user turn")


def parse_record(record: Any) -> tuple[Message, ...]:
    """Validate one decoded JSON record and return its messages; raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    has_openai, has_sharegpt = "messages" in record, "conversations" in record
    if has_openai and has_sharegpt:
        raise ValueError("record has both 'messages' and 'conversations'; keep one")
    if not (has_openai or has_sharegpt):
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise ValueError(f"record has neither 'messages' nor 'conversations' (keys: {keys})")
    turns = record["messages" if has_openai else "conversations"]
    if not isinstance(turns, list):
        raise ValueError(f"'{'messages' if has_openai else 'conversations'}' must be a list")
    if not turns:
        raise ValueError("conversation is empty")
    shape = OPENAI if has_openai else SHAREGPT
    messages = [_message(raw, i, shape) for i, raw in enumerate(turns)]
    _check_order(messages)
    return tuple(messages)


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
                yield i, {k: v for k, v in row.items() if k in ("messages", "conversations") and v is not None}
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


def validate_records(
    path: str, records: Iterable[tuple[int, Any | Exception]], *, skip_invalid: bool, report: LoadReport
) -> Iterator[Conversation]:
    """Records to validated conversations; a bad one raises DataError (file:line) unless `skip_invalid`, which
    counts it in `report` with its reason."""
    for lineno, record in records:
        report.read += 1
        try:
            if isinstance(record, Exception):
                raise record
            messages = parse_record(record)
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
        yield Conversation(messages=messages, source=path, line=lineno)


def check_loaded(report: LoadReport, paths: Iterable[str | Path]) -> None:
    """An input without records, or whose every record was invalid, is an error (whatever skip_invalid says)."""
    names = ", ".join(str(p) for p in paths)
    if not report.read:
        raise DataError("no records found (the file is empty)", path=names)
    if not report.used:
        raise DataError(f"every record was invalid: {report.summary()}", path=names)


def iter_conversations(
    paths: str | Path | Iterable[str | Path], *, skip_invalid: bool = False, report: LoadReport | None = None
) -> Iterator[Conversation]:
    """Validated conversations one at a time (memory stays flat on large files); counts go into `report`.

    Raises DataError at the first bad record unless `skip_invalid`. An empty input, or one whose every record is
    invalid, is an error either way.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    report = report if report is not None else LoadReport()
    for path in paths:
        yield from validate_records(str(path), iter_records(path), skip_invalid=skip_invalid, report=report)
    check_loaded(report, paths)


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


def conversation(*turns: tuple[str, str] | Message) -> Conversation:
    """Build a validated conversation in code: `conversation(("user", "Hi"), ("assistant", "Hello"))`."""
    raw = [t if isinstance(t, Message) else Message(role=t[0], content=t[1]) for t in turns]  # type: ignore[arg-type]
    record = {
        "messages": [
            {"role": m.role, "content": m.content, **({} if m.train is None else {"train": m.train})} for m in raw
        ]
    }
    return Conversation(messages=parse_record(record))


if __name__ == "__main__":
    _, rep = load_conversations(sys.argv[1:], skip_invalid=True)
    print(rep.summary())
