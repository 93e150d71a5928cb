"""`eosguard prepare`: conversations to a tokenized `datasets` folder (input_ids, labels, length), cached.

- Streams: records are read, validated and rendered in chunks and written to Arrow as they come, so memory stays
  bounded by the chunk size, not the corpus (`Dataset.from_generator`).
- Batched: each chunk is one `ChatRenderer.render_batch` call (one batched tokenizer call).
- Parallel: `--num-proc K` gives each process every K-th record; counts from all processes are added up.
- Cached by content hash: a hash of the data bytes, the tokenizer (vocabulary, template, pad) and the options is
  stored in `OUT/eosguard_prepare.json`; a second run with the same inputs returns at once.
- Counted: records read / used / skipped (and why), examples truncated / dropped, tokens trained.

`OUT` loads with `datasets.load_from_disk`; `OUT/tokenizer` is the prepared tokenizer the ids belong to.

Run as:
    eosguard prepare data.jsonl --tokenizer PATH --out prepared/ [--max-length 2048] [--num-proc 2]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eosguard.conversations import LoadReport, iter_conversations
from eosguard.errors import DataError, EosguardError
from eosguard.examples import PrepStats, build_examples
from eosguard.files import atomic_folder
from eosguard.render import ChatRenderer
from eosguard.tokenizer_setup import load_tokenizer, prepare_tokenizer

MANIFEST = "eosguard_prepare.json"
FORMAT_VERSION = 2  # 2: the manifest holds the tokenizer key and the counts (train reads them)


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


def content_key(data: Sequence[str], tok: Any, options: dict[str, Any]) -> str:
    """sha256 of everything the output depends on: data bytes, tokenizer, template, pad, options, format."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, **options}, sort_keys=True).encode())
    h.update(tokenizer_key(tok).encode())
    for d in data:
        p = Path(d)
        if not p.exists():
            raise DataError("no such file or folder", path=str(d))
        _hash_path(h, p)
    return h.hexdigest()


def _rows(
    shards: list[tuple[int, int]], data: list[str], tok: Any, options: dict[str, Any], stats_dir: str, chunk: int
) -> Iterator[dict[str, Any]]:
    """One process's share of the rows; its counts (or its error) go to stats_dir/shard-K.json."""
    renderer = ChatRenderer(tok, train_on=options["train_on"])
    for k, n in shards:
        load, prep = LoadReport(), PrepStats()
        error = None
        try:
            convs = iter_conversations(data, skip_invalid=options["skip_invalid"], report=load, shard=(k, n))
            batch = []
            for conv in convs:
                batch.append(conv)
                if len(batch) == chunk:
                    yield from _examples(batch, renderer, options, prep)
                    batch = []
            yield from _examples(batch, renderer, options, prep)
        except EosguardError as exc:
            error = str(exc)
        Path(stats_dir, f"shard-{k}.json").write_text(
            json.dumps(
                {
                    "load": {"read": load.read, "used": load.used, "skipped": load.skipped},
                    "prep": asdict(prep),
                    "error": error,
                }
            )
        )


def _examples(
    batch: list, renderer: ChatRenderer, options: dict[str, Any], total: PrepStats
) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    examples, stats = build_examples(
        batch, renderer, max_length=options["max_length"], over_length=options["over_length"]
    )
    total += stats
    for ex in examples:
        yield {**ex, "length": len(ex["input_ids"])}


def _merge(stats_dir: Path, num_proc: int, *, partial: bool = False) -> tuple[LoadReport, PrepStats]:
    """Add up the shards' counts; raise the first shard's error. `partial`: shards may have written nothing."""
    load, prep = LoadReport(), PrepStats()
    for k in range(num_proc):
        path = stats_dir / f"shard-{k}.json"
        if partial and not path.exists():
            continue
        part = json.loads(path.read_text())
        if part["error"]:
            raise EosguardError(part["error"])
        load.read += part["load"]["read"]
        load.used += part["load"]["used"]
        load.skipped += [tuple(s) for s in part["load"]["skipped"]]
        prep += PrepStats(**part["prep"])
    load.skipped.sort(key=lambda s: (s[0], s[1] or 0))
    return load, prep


def prepare_dataset(
    data: Sequence[str],
    tokenizer: str | Any,
    out: str | Path,
    *,
    max_length: int = 2048,
    over_length: str = "truncate",
    train_on: str = "all",
    skip_invalid: bool = False,
    num_proc: int = 1,
    chunk: int = 2000,
) -> list[str]:
    """Write (or reuse) the tokenized dataset in `out`; returns the summary lines."""
    import datasets

    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    setup = prepare_tokenizer(tok)
    data = [str(d) for d in data]
    options = {"max_length": max_length, "over_length": over_length, "train_on": train_on, "skip_invalid": skip_invalid}
    key = content_key(data, tok, options)
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous.get("key") == key:
            return [*previous["summary"], f"cached: {out} already holds this data, tokenizer and options ({key[:12]})"]

    # Progress: `datasets` draws bars for rendering ("Generating train split") and writing ("Saving the dataset") on
    # a terminal; in a log its carriage-return bars are noise, so there it is quiet and each stage is one line.
    plain = not sys.stderr.isatty()
    bars_were_on = datasets.is_progress_bar_enabled()
    if plain:
        datasets.disable_progress_bars()
        print(f"rendering and tokenizing {', '.join(data)} ({num_proc} process(es))", file=sys.stderr)
    try:
        return _prepare(data, tok, setup, out, key, options, num_proc, chunk, plain)
    finally:
        if plain and bars_were_on:
            datasets.enable_progress_bars()


def _prepare(
    data: list[str],
    tok: Any,
    setup: Any,
    out: Path,
    key: str,
    options: dict[str, Any],
    num_proc: int,
    chunk: int,
    plain: bool,
) -> list[str]:
    import datasets

    with tempfile.TemporaryDirectory(prefix="eosguard-prepare-") as tmp:
        stats_dir = Path(tmp, "stats")
        stats_dir.mkdir()
        shards = [(k, num_proc) for k in range(num_proc)]
        try:
            ds = datasets.Dataset.from_generator(
                _rows,
                gen_kwargs={
                    "shards": shards,
                    "data": tuple(data),
                    "tok": tok,
                    "options": options,
                    "stats_dir": str(stats_dir),
                    "chunk": chunk,
                },
                num_proc=num_proc if num_proc > 1 else None,
                cache_dir=str(Path(tmp, "cache")),
                features=datasets.Features(
                    {
                        "input_ids": datasets.List(datasets.Value("int32")),
                        "labels": datasets.List(datasets.Value("int32")),
                        "length": datasets.Value("int32"),
                    }
                ),
            )
        except Exception:
            # A shard that stopped on a bad record yields nothing, and `datasets` then fails on an empty split: the
            # shard's own error (file:line: reason) is the one to report, not that consequence.
            load, _ = _merge(stats_dir, num_proc, partial=True)
            if load.read and not load.used:
                raise DataError(f"every record was invalid: {load.summary()}", path=", ".join(data)) from None
            raise
        load, prep = _merge(stats_dir, num_proc)
        if load.read and not load.used:
            raise DataError(f"every record was invalid: {load.summary()}", path=", ".join(data))
        summary = [
            *(f"tokenizer: {line}" for line in setup.lines()),
            f"data: {load.summary()}",
            f"examples: {prep.summary()}",
            f"wrote {out} ({len(ds)} rows; tokenizer in {out}/tokenizer)",
        ]
        if plain:
            print(f"writing {len(ds)} rows to {out}", file=sys.stderr)
        with atomic_folder(out) as staging:
            ds.save_to_disk(str(staging))
            tok.save_pretrained(str(staging / "tokenizer"))
            manifest_text = json.dumps(
                {
                    "format": FORMAT_VERSION,
                    "key": key,
                    "tokenizer_key": tokenizer_key(tok),
                    "options": options,
                    "load": load.summary(),
                    "prep": asdict(prep),
                    "summary": summary,
                },
                indent=2,
            )
            (staging / MANIFEST).write_text(manifest_text)
    return summary


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


def read_prepared(folder: str | Path, tok: Any, options: dict[str, Any]) -> tuple[PreparedExamples, dict[str, Any]]:
    """The examples of a prepared folder and its manifest, after checking that they belong to `tok` and `options`
    (max_length: at most the run's; over_length and train_on: equal). A mismatch is an EosguardError (exit 2)."""
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
    was = manifest["options"]
    problems = [
        f"{k}: prepared {was[k]!r}, this run {options[k]!r}"
        for k in ("over_length", "train_on")
        if was[k] != options[k]
    ]
    if was["max_length"] > options["max_length"]:
        problems.append(f"max_length: prepared {was['max_length']}, longer than this run's {options['max_length']}")
    if problems:
        raise DataError("prepared with other options: " + "; ".join(problems), path=str(folder))
    return PreparedExamples(folder), manifest


__all__ = ["PreparedExamples", "content_key", "prepare_dataset", "read_prepared", "tokenizer_key"]
