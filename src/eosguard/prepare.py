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
FORMAT_VERSION = 1


def _hash_path(h: Any, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)


def content_key(data: Sequence[str], tok: Any, options: dict[str, Any]) -> str:
    """sha256 of everything the output depends on: data bytes, tokenizer, template, pad, options, format."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, **options}, sort_keys=True).encode())
    h.update(tok.backend_tokenizer.to_str().encode())
    h.update(str(tok.chat_template).encode() + str(tok.pad_token_id).encode())
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
            manifest_text = json.dumps({"key": key, "options": options, "summary": summary}, indent=2)
            (staging / MANIFEST).write_text(manifest_text)
    return summary


__all__ = ["content_key", "prepare_dataset"]
