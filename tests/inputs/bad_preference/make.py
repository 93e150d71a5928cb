"""Writes the preference-rows inputs here: three pairs on SmolLM2's tokenizer as eosguard renders them (`prompt_ids`,
`chosen_ids`, `rejected_ids`), well formed (`good.*`: they pass `eosguard doctor --prepared` with exit 0), and each
other one with one defect (exit 2 naming the file, the row or line and the column:
`tests/checks/test_preference_doctor.py` states each).

Run as (from the repository root, in eosguard's venv):
    python tests/inputs/bad_preference/make.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
PAIRS = [
    ("Add: 79 + 32", "111", "I forget."),
    ("Sort: pear apple fig", "apple fig pear", "No."),
    ("Hi", "Hello!", "Go."),
]


def rows() -> list[dict]:
    from eosguard.chat.preference import PreferenceStats, fit_preferences
    from eosguard.chat.render import ChatRenderer
    from eosguard.data.preferences import parse_preference
    from eosguard.testing.fixtures import smollm2_tokenizer

    records = [
        parse_preference(
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
        for q, good, bad in PAIRS
    ]
    renderer = ChatRenderer(smollm2_tokenizer())
    return [r.columns() for r in fit_preferences(records, renderer, PreferenceStats(), max_length=1024)]


def jsonl(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    import datasets

    good = rows()
    jsonl("good.jsonl", good)
    pq.write_table(pa.Table.from_pylist(good), HERE / "good.parquet")
    shutil.rmtree(HERE / "good_dataset", ignore_errors=True)
    datasets.Dataset.from_list(good).save_to_disk(str(HERE / "good_dataset"))

    def edited(line: int, drop: str | None = None, **columns: object) -> list[dict]:
        out = [dict(r, **columns) if i == line - 1 else dict(r) for i, r in enumerate(good)]
        if drop:
            del out[line - 1][drop]
        return out

    jsonl("chosen_string.jsonl", edited(2, chosen_ids=" ".join(map(str, good[1]["chosen_ids"]))))
    jsonl("rejected_missing.jsonl", edited(3, drop="rejected_ids"))
    lines = (HERE / "good.jsonl").read_bytes().split(b"\n")
    (HERE / "invalid_utf8.jsonl").write_bytes(b"\n".join([lines[0], b'{"prompt_ids": [1, 2], "\xc0": 1}', *lines[2:]]))
    jsonl("ids_out_of_vocab.jsonl", edited(2, rejected_ids=[*good[1]["rejected_ids"][:-1], 99_999]))
    unpaired = [{"prompt_ids": r["prompt_ids"], "completion_ids": r["chosen_ids"], "label": True} for r in good]
    jsonl("label_string.jsonl", [dict(r, label="yes") if i == 1 else r for i, r in enumerate(unpaired)])
    schema = pa.schema([(c, pa.list_(pa.int64())) for c in ("prompt_ids", "chosen_ids", "rejected_ids")])
    nulled = [dict(r, prompt_ids=None) if i == 1 else r for i, r in enumerate(good)]
    pq.write_table(pa.Table.from_pylist(nulled, schema=schema), HERE / "prompt_null.parquet")
    # LLaMA-Factory's pairwise layout, one row whose two sides start with different prompts
    pairwise = []
    for i, r in enumerate(good):
        other = [*r["prompt_ids"][:-1], r["prompt_ids"][-1] + 1] if i == 2 else r["prompt_ids"]
        pairwise.append(
            {"chosen_input_ids": r["prompt_ids"] + r["chosen_ids"],
             "chosen_labels": [-100] * len(r["prompt_ids"]) + r["chosen_ids"],
             "rejected_input_ids": other + r["rejected_ids"],
             "rejected_labels": [-100] * len(other) + r["rejected_ids"]}
        )  # fmt: skip
    jsonl("pairwise_prompts_differ.jsonl", pairwise)
    records = [{"prompt": q, "chosen": good_, "rejected": bad} for q, good_, bad in PAIRS]
    shutil.rmtree(HERE / "records_dataset", ignore_errors=True)
    datasets.Dataset.from_list(records).save_to_disk(str(HERE / "records_dataset"))


if __name__ == "__main__":
    main()
