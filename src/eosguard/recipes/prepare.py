"""`eosguard prepare`: conversations to a tokenized `datasets` folder (input_ids, labels, length), cached; preference
records (`eosguard.data.preferences`) to the columns TRL's preference trainers take (`prompt_ids`, `chosen_ids`,
`rejected_ids`; unpaired: `prompt_ids`, `completion_ids`, `label`), each completion through its closing sequence once
(`eosguard.chat.preference`). What the inputs hold is read off their records (`data_kind`) and kept in the manifest.

- Parallel and in order: the inputs are cut into runs of records (`RecordRun`: byte ranges of a JSONL file, row
  ranges of a dataset); each worker process reads, validates, renders and tokenizes whole runs; the results are
  written in file order, so rows keep the order of the data and the error raised is the first bad record in file
  order (file:line). `--num-proc` defaults to the cores; 1 runs everything in this process.
- Streamed: each run becomes one Arrow record batch written as it arrives; memory holds a few runs, never the corpus.
- Written directly: ids and labels go to Arrow columns from numpy (no per-row Python objects, nothing for `datasets`
  to fingerprint); `datasets` only turns the finished stream into its folder.
- Cached by content hash: a hash of the data bytes, the tokenizer (vocabulary, template, pad) and the settings is
  stored in `OUT/eosguard_prepare.json`; a second run with the same inputs returns at once.
- Counted: records read / used / skipped (and why), examples truncated / dropped, tokens trained.

`OUT` loads with `datasets.load_from_disk`; `OUT/tokenizer` is the prepared tokenizer the ids belong to;
`eosguard train` reads it as `data: {prepared: OUT}`.

Run as:
    eosguard prepare data.jsonl --tokenizer PATH --out prepared/ [--max-length 2048] [--num-proc 2]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import DataError
from eosguard.base.files import atomic_folder
from eosguard.base.loading import load_tokenizer
from eosguard.base.progress import progress
from eosguard.chat.examples import PrepStats, fit_examples
from eosguard.chat.preference import PreferenceRow, PreferenceStats, fit_preferences
from eosguard.chat.render import ChatRenderer, Rendered, label_array
from eosguard.chat.settings import RenderSettings
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.data.records import (
    DataKind,
    LoadReport,
    RecordRun,
    check_loaded,
    data_kind,
    record_runs,
    validate_records,
)

MANIFEST = "eosguard_prepare.json"
FORMAT_VERSION = 5  # 2: tokenizer key and counts; 3: per-reply examples, tools; 4: RenderSettings; 5: the data's kind


def _hash_path(h: Any, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)


def tokenizer_key(tok: Any) -> str:
    """sha256 of what a prepared tokenizer contributes to the ids: vocabulary and merges, chat template, pad id."""
    h = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    h.update(str(tok.chat_template).encode() + str(tok.pad_token_id).encode())
    return h.hexdigest()


def content_key(data: Sequence[str], tok_key: str, settings: RenderSettings) -> str:
    """sha256 of everything the output depends on: data bytes, the tokenizer (`tokenizer_key`), settings, format."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, **settings.model_dump(mode="json")}, sort_keys=True).encode())
    h.update(tok_key.encode())
    for d in data:
        p = Path(d)
        if not p.exists():
            raise DataError("no such file or folder", path=str(d))
        _hash_path(h, p)
    return h.hexdigest()


DATA_FILE = "data-00000-of-00001.arrow"  # the one shard of a `datasets` folder (`save_to_disk` names it so)


def _arrow_schema(kind: DataKind = "conversations") -> Any:
    """The columns' Arrow types, declared once (the workers' batches: pyarrow alone, no `datasets` import)."""
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    if kind == "paired":
        return pa.schema([("prompt_ids", ids), ("chosen_ids", ids), ("rejected_ids", ids)])
    if kind == "unpaired":
        return pa.schema([("prompt_ids", ids), ("completion_ids", ids), ("label", pa.bool_())])
    return pa.schema([("input_ids", ids), ("labels", ids), ("length", pa.int32())])


def _features(kind: DataKind = "conversations") -> Any:
    """The same columns as `datasets` features (List(Value("int32")), ...), for the folder's metadata."""
    import datasets

    return datasets.Features.from_arrow_schema(_arrow_schema(kind))


def _list_column(arrays: Sequence[np.ndarray]) -> Any:
    """Arrays as one Arrow list column: values concatenated once, each row a slice (no per-row objects)."""
    import pyarrow as pa

    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays).astype(np.int32) if len(arrays) else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))  # Arrow arrays: ~100x faster than numpy


def _to_columns(examples: list[Rendered]) -> Any:
    """Examples as one Arrow record batch."""
    import pyarrow as pa

    lengths = np.fromiter((len(r) for r in examples), dtype=np.int32, count=len(examples))
    columns = [
        _list_column([r.input_ids for r in examples]),
        _list_column([label_array(r.input_ids, r.mask) for r in examples]),
        pa.array(lengths),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=_arrow_schema())


def _preference_columns(rows: list[PreferenceRow], kind: DataKind) -> Any:
    """Preference rows as one Arrow record batch (`_arrow_schema(kind)`)."""
    import pyarrow as pa

    columns = [_list_column([r.prompt_ids for r in rows]), _list_column([r.completions[0] for r in rows])]
    if kind == "paired":
        columns.append(_list_column([r.completions[1] for r in rows]))
    else:
        columns.append(pa.array([bool(r.label) for r in rows], type=pa.bool_()))
    return pa.RecordBatch.from_arrays(columns, schema=_arrow_schema(kind))


# A worker's renderer and settings, set once per process (fork: inherited; spawn: built from the pickled tokenizer).
_worker: dict[str, Any] = {}


def _start_worker(tok: Any, settings: RenderSettings, kind: DataKind = "conversations") -> None:
    train_on = "last" if kind != "conversations" else settings.train_on  # a preference trains its completion
    _worker["renderer"] = ChatRenderer(tok, train_on=train_on, tools=settings.tools)
    _worker["settings"] = settings
    _worker["kind"] = kind


def _render_run(run: RecordRun) -> tuple[Any, LoadReport, Any]:
    """Read, validate, render and fit one run of records: an Arrow record batch and the counts (runs in a worker).
    A bad record raises its DataError (file:line) unless skip_invalid."""
    settings, kind, load = _worker["settings"], _worker["kind"], LoadReport()
    prefer = kind != "conversations"
    records = list(
        validate_records(run.path, run.records(), skip_invalid=settings.skip_invalid, report=load, preferences=prefer)
    )
    fit = {"max_length": settings.max_length, "over_length": settings.over_length, "batch_size": max(1, len(records))}
    if not prefer:
        prep: Any = PrepStats()
        return _to_columns(list(fit_examples(records, _worker["renderer"], prep, **fit))), load, prep
    prep = PreferenceStats()
    rows = list(fit_preferences(records, _worker["renderer"], prep, **fit))
    return _preference_columns(rows, kind), load, prep


def _workers(num_proc: int, tok: Any, settings: RenderSettings, kind: DataKind) -> Any:
    """`num_proc` worker processes, each with its own renderer (one thread each: together they fill the cores)."""
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # The workers inherit the environment they start with; this process keeps its own setting.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        context = multiprocessing.get_context(method)
        return context.Pool(num_proc, initializer=_start_worker, initargs=(tok, settings, kind))
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _write_rows(
    data: list[str], tok: Any, settings: RenderSettings, kind: DataKind, path: Path, num_proc: int, run_size: int
) -> tuple[LoadReport, Any, int]:
    """Cut the inputs into runs of records; read, validate, render and tokenize each run in a worker (here when
    num_proc is 1); write their record batches, in file order, to one Arrow stream at `path`. Results are taken in
    order, so the error raised is the first bad record in file order."""
    import pyarrow as pa

    load, rows = LoadReport(), 0
    prep: Any = PrepStats() if kind == "conversations" else PreferenceStats()
    runs = record_runs(data, size=run_size)
    pool = _workers(num_proc, tok, settings, kind) if num_proc > 1 else None
    try:
        if pool is None:
            _start_worker(tok, settings, kind)
            results: Iterator[tuple[Any, LoadReport, Any]] = map(_render_run, runs)
        else:
            results = pool.imap(_render_run, runs)  # in order; a worker's error is raised when its turn comes
        # The stream's schema carries the `datasets` features (so `load_from_disk` reads the types back); importing
        # `datasets` for it once the workers are running keeps that import off the critical path.
        schema = _features(kind).arrow_schema
        with (
            pa.OSFile(str(path), "wb") as sink,
            pa.ipc.new_stream(sink, schema) as writer,
            progress("rendering and tokenizing", total=sum(r.lines for r in runs), enabled=bool(runs)) as advance,
        ):
            for run, (batch, run_load, run_prep) in zip(runs, results, strict=True):
                writer.write_batch(batch.replace_schema_metadata(schema.metadata))
                rows += batch.num_rows
                load.read, load.used = load.read + run_load.read, load.used + run_load.used
                load.skipped += run_load.skipped
                prep += run_prep
                advance(run.lines)
    finally:
        if pool is not None:
            pool.terminate()
    check_loaded(load, data)
    return load, prep, rows


def prepare_dataset(
    data: Sequence[str],
    tokenizer: str | Any,
    out: str | Path,
    settings: RenderSettings | None = None,
    *,
    num_proc: int | None = None,
    run_size: int = 1000,
) -> list[str]:
    """Write (or reuse) the tokenized dataset in `out`; returns the summary lines.

    settings: how conversations become examples (template arguments are written into the saved tokenizer's
    template); num_proc: processes that render and tokenize (default `default_num_proc()`: one per core).
    """
    settings = settings or RenderSettings()
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    setup = prepare_tokenizer(tok, template_args=settings.template_args)
    data = [str(d) for d in data]
    kind = data_kind(data)
    tok_key = tokenizer_key(tok)
    key = content_key(data, tok_key, settings)
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous.get("key") == key:
            return [*previous["summary"], f"cached: {out} already holds this data, tokenizer and settings ({key[:12]})"]
    num_proc = num_proc or default_num_proc()
    with atomic_folder(out) as staging:  # the rows are written where they stay: nothing is copied or read back
        load, prep, rows = _write_rows(data, tok, settings, kind, staging / DATA_FILE, num_proc, run_size)
        _finish_dataset_folder(staging, key, kind)
        tok.save_pretrained(str(staging / "tokenizer"))
        summary = [
            *(f"tokenizer: {line}" for line in setup.lines()),
            f"data: {load.summary()}",
            f"{'examples' if kind == 'conversations' else kind + ' preferences'}: {prep.summary()}",
            f"wrote {out} ({rows} rows; tokenizer in {out}/tokenizer)",
        ]
        manifest_text = json.dumps(
            {
                "format": FORMAT_VERSION,
                "key": key,
                "kind": kind,
                "tokenizer_key": tok_key,
                "settings": settings.model_dump(mode="json"),
                "load": load.summary(),
                "prep": asdict(prep),
                "summary": summary,
            },
            indent=2,
        )
        (staging / MANIFEST).write_text(manifest_text)
    return summary


def default_num_proc() -> int:
    """One rendering process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _finish_dataset_folder(folder: Path, key: str, kind: DataKind) -> None:
    """Make a folder holding DATA_FILE a `datasets` folder (`load_from_disk`): the two files `save_to_disk` writes
    beside its shards. The state is what `save_to_disk` records for a plain dataset; tests load every folder."""
    import datasets

    datasets.DatasetInfo(features=_features(kind)).write_to_directory(str(folder))
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": key[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / datasets.config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2))


class PreparedExamples(Sequence):
    """The examples of a folder written by `eosguard prepare`, read on demand from its memory-mapped Arrow files:
    memory does not grow with the number of conversations (only the `length` column is held, for packing)."""

    def __init__(self, folder: str | Path) -> None:
        import datasets

        self.folder = Path(folder)
        self.dataset = datasets.load_from_disk(str(self.folder))
        self.lengths = [int(n) for n in self.dataset["length"]]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, list[int]]:  # type: ignore[override]
        row = self.dataset[int(i)]
        return {"input_ids": row["input_ids"], "labels": row["labels"]}


def require_same_vocabulary(folder: str | Path, tok: Any) -> None:
    """Rows `eosguard prepare` wrote hold the ids of the tokenizer it saved beside them (`tokenizer/`); read with a
    tokenizer whose tokens have other ids they would mean other text, and every finding on them would be false: a
    DataError (exit 2). Tokens the saved one has past `tok`'s vocabulary (a pad eosguard added) are not compared.
    Folders of other tools carry no tokenizer to compare with, and are left alone."""
    saved = Path(folder) / "tokenizer"
    if not (Path(folder) / MANIFEST).is_file() or not saved.is_dir():
        return
    ours, size = tok.get_vocab(), len(tok)
    differ = [t for t, i in load_tokenizer(str(saved)).get_vocab().items() if i < size and ours.get(t) != i]
    if differ:
        raise DataError(
            f"written by `eosguard prepare` with another tokenizer ({len(differ)} of its tokens have other ids here, "
            f"e.g. {differ[0]!r}): these ids would be read as other text",
            path=str(folder),
            hint=f"--tokenizer {saved} (the tokenizer the rows were written with), or prepare them again",
        )


def read_prepared(
    folder: str | Path, tok: Any, settings: RenderSettings, kind: DataKind = "conversations"
) -> tuple[Any, dict[str, Any]]:
    """The examples of a prepared folder (conversations: `PreparedExamples`; preference rows: the `datasets.Dataset`
    TRL's trainers take) and its manifest, after checking that they are of `kind` and belong to `tok` and to this
    run's `settings` (`RenderSettings.differences`). A mismatch is an EosguardError (exit 2)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"not a folder written by `eosguard prepare` ({exc})", path=str(folder)) from None
    if manifest.get("format") != FORMAT_VERSION:
        raise DataError(
            f"written by another eosguard (format {manifest.get('format', 1)}; this one reads {FORMAT_VERSION})",
            path=str(folder),
            hint="run `eosguard prepare` again",
        )
    if manifest["tokenizer_key"] != tokenizer_key(tok):
        raise DataError(
            "prepared with another tokenizer (vocabulary, chat template or pad differ from this run's): its ids "
            "would not mean what this model reads",
            path=str(folder),
            hint=f"prepare again with this run's tokenizer, or train with the one in {folder}/tokenizer",
        )
    if manifest.get("kind", "conversations") != kind:
        raise DataError(f"holds {manifest.get('kind')} rows, and this run trains on {kind}", path=str(folder))
    written = RenderSettings.model_validate(manifest["settings"])
    if kind != "conversations":  # a preference's completion is its one trained reply, whatever the SFT setting
        written = written.model_copy(update={"train_on": settings.train_on})
    problems = settings.differences(written)
    if problems:
        raise DataError("prepared with other settings: " + "; ".join(problems), path=str(folder))
    if kind != "conversations":
        import datasets

        return datasets.load_from_disk(str(folder)), manifest
    return PreparedExamples(folder), manifest


__all__ = [
    "PreparedExamples", "content_key", "prepare_dataset", "read_prepared", "require_same_vocabulary", "tokenizer_key",
]  # fmt: skip
