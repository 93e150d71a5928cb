"""Writes the prepared-rows inputs here: rows of three chats on SmolLM2's tokenizer as eosguard renders them, well
formed (`good.*`, `last_run_prepared/`: they pass `eosguard doctor --prepared` with exit 0) and each with one defect
of issue #33 (exit 2 naming the file, the row or line and the column: `tests/checks/test_rows.py` states each).

Run as (from the repository root, in eosguard's venv):
    python tests/inputs/bad_prepared/make.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
CHATS = [
    [("Add: 79 + 32", "111")],
    [("First word: meadow coral dragon", "meadow"), ("Last word: candle thunder velvet", "velvet")],
    [("Sort: pear apple fig", "apple fig pear")],
]


def rows() -> list[dict[str, list[int]]]:
    from eosguard.chat.render import ChatRenderer
    from eosguard.data.conversations import conversation
    from eosguard.testing.fixtures import smollm2_tokenizer

    chats = [conversation(*[t for q, a in c for t in (("user", q), ("assistant", a))]) for c in CHATS]
    out = [r.to_example() for r in ChatRenderer(smollm2_tokenizer()).examples(chats)]
    return [
        {"input_ids": r["input_ids"], "labels": r["labels"], "attention_mask": [1] * len(r["input_ids"])} for r in out
    ]


def jsonl(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def parquet(name: str, rows: list[dict], schema: pa.Schema | None = None) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), HERE / name)


def folder(name: str, rows: list[dict]) -> None:
    import datasets

    shutil.rmtree(HERE / name, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(HERE / name))


def skewed(rows: list[dict], column: str, longer: int, shorter: int) -> list[dict]:
    """Rows whose `column` is two tokens longer in row `longer` and two shorter in row `shorter`: the same total."""
    out = [dict(r) for r in rows]
    out[longer][column] = out[longer][column] + out[longer][column][-2:]
    out[shorter][column] = out[shorter][column][:-2]
    return out


def main() -> None:
    good = rows()
    jsonl("good.jsonl", good)
    parquet("good.parquet", good)
    folder("good_dataset", good)
    shutil.rmtree(HERE / "last_run_prepared", ignore_errors=True)  # axolotl's root: a folder per content hash
    folder("last_run_prepared/6c1e2bd4a7f0", good[:2])
    folder("last_run_prepared/f93a0c5e1b27", good[2:])

    def edited(line: int, **columns) -> list[dict]:
        return [dict(r, **columns) if i == line - 1 else r for i, r in enumerate(good)]

    labels = good[1]["labels"]
    jsonl("labels_nested.jsonl", edited(2, labels=[[y] for y in labels]))
    jsonl("labels_half.jsonl", edited(2, labels=[*labels[:-3], 0.5, *labels[-2:]]))
    jsonl("labels_string.jsonl", edited(3, labels=" ".join(map(str, good[2]["labels"]))))
    jsonl("labels_cut_shifted.jsonl", edited(2, labels=labels[1:]))
    jsonl("labels_minus_one.jsonl", edited(2, labels=[-1 if y == -100 else y for y in labels]))
    jsonl("ids_out_of_vocab.jsonl", edited(3, input_ids=[*good[2]["input_ids"][:-1], 99_999]))
    (HERE / "rows_as_array.json").write_text(json.dumps(good, indent=1))  # `to_json(lines=False)`: not JSON Lines
    parquet("labels_misaligned.parquet", skewed(good, "labels", 1, 2))
    folder("attention_misaligned_dataset", skewed(good, "attention_mask", 0, 2))
    trl = [{"input_ids": r["input_ids"], "assistant_masks": [int(y != -100) for y in r["labels"]]} for r in good]
    parquet("masks_misaligned.parquet", skewed(trl, "assistant_masks", 1, 2))
    folder("labels_nested_dataset", [dict(r, labels=[[y] for y in r["labels"]]) for r in good])
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    parquet(
        "ids_null.parquet",
        [{"input_ids": None if i == 1 else r["input_ids"], "labels": r["labels"]} for i, r in enumerate(good)],
        schema,
    )
    parquet("no_input_ids.parquet", [{"ids": r["input_ids"], "labels": r["labels"], "text": "x"} for r in good])


if __name__ == "__main__":
    main()
