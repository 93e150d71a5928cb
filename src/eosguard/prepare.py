"""`eosguard prepare`: conversations to a tokenized `datasets` folder (input_ids, labels, length).

Rendering goes through `ChatMLRenderer.render_batch` (one batched tokenizer call per chunk) and the explicit
over-length policy; the folder loads with `datasets.load_from_disk`. Chunks are written as they are made, so
memory stays bounded by the chunk size, not the corpus.

Run as:
    eosguard prepare data.jsonl --tokenizer PATH --out prepared/ [--max-length 2048]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from eosguard.chatml import ChatMLRenderer
from eosguard.conversations import LoadReport, load_conversations
from eosguard.tokenizer_setup import load_tokenizer, prepare_tokenizer
from eosguard.train import PrepStats, build_examples


def prepare_dataset(
    data: Sequence[str],
    tokenizer: str | Any,
    out: str | Path,
    *,
    max_length: int = 2048,
    over_length: str = "truncate",
    train_on: str = "all",
    skip_invalid: bool = False,
    chunk: int = 2000,
) -> list[str]:
    """Write the tokenized dataset to `out`; returns the summary lines it also prints."""
    import datasets

    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    setup = prepare_tokenizer(tok)
    renderer = ChatMLRenderer(tok, train_on=train_on)  # type: ignore[arg-type]
    convs, load_report = load_conversations(data, skip_invalid=skip_invalid)
    totals = PrepStats()

    def rows() -> Iterator[dict[str, Any]]:
        for b in range(0, len(convs), chunk):
            examples, stats = build_examples(
                convs[b : b + chunk], renderer, max_length=max_length, over_length=over_length
            )  # type: ignore[arg-type]
            for field in (
                "conversations",
                "examples",
                "truncated",
                "dropped_too_long",
                "dropped_no_target",
                "trained_tokens",
                "total_tokens",
            ):
                setattr(totals, field, getattr(totals, field) + getattr(stats, field))
            for ex in examples:
                yield {**ex, "length": len(ex["input_ids"])}

    ds = datasets.Dataset.from_generator(rows)
    ds.save_to_disk(str(out))
    tok.save_pretrained(str(Path(out) / "tokenizer"))
    return [
        *(f"tokenizer: {line}" for line in setup.lines()),
        f"data: {load_report.summary()}",
        f"examples: {totals.summary()}",
        f"wrote {out} ({len(ds)} rows; tokenizer in {out}/tokenizer)",
    ]


__all__ = ["LoadReport", "prepare_dataset"]
