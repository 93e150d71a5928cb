"""`eosguard prepare`: a datasets folder with the tokenizer's own ids, cached by content, parallel-safe."""

import json
import sys
import time
from pathlib import Path

import datasets
import pytest

from eosguard.fixtures import openhermes_tokenizer
from eosguard.prepare import MANIFEST, prepare_dataset
from eosguard.render import IGNORE_INDEX

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from common import synthetic_conversations


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("prep") / "chats.jsonl"
    with path.open("w") as f:
        for c in synthetic_conversations(300, seed=3):
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    return path


def test_columns_ids_and_labels(data, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    summary = prepare_dataset([str(data)], tok, tmp_path / "out", max_length=4096)
    assert any("read 300 records, used 300, skipped 0" in line for line in summary)
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 300 and {"input_ids", "labels", "length"} <= set(ds.column_names)
    convs = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
    for row, msgs in zip(ds.select(range(20)), convs, strict=False):
        # The prepared tokenizer carries eosguard's ChatML template: the ids are exactly what it gives.
        assert row["input_ids"] == tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
        trained = [i for i, y in zip(row["input_ids"], row["labels"], strict=True) if y != IGNORE_INDEX]
        expected = "".join(m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant")
        assert tok.decode(trained) == expected
    loaded = openhermes_tokenizer().from_pretrained(str(tmp_path / "out" / "tokenizer"))
    assert loaded.pad_token == "<unk>"


def test_second_run_is_cached_and_changes_invalidate(data, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    out = tmp_path / "out"
    prepare_dataset([str(data)], tok, out, max_length=4096)
    written = (out / MANIFEST).stat().st_mtime_ns
    start = time.perf_counter()
    summary = prepare_dataset([str(data)], tok, out, max_length=4096)
    assert summary[-1].startswith("cached:") and time.perf_counter() - start < 2.0
    assert (out / MANIFEST).stat().st_mtime_ns == written
    again = prepare_dataset([str(data)], tok, out, max_length=64)  # another option: recomputed
    assert not again[-1].startswith("cached:")
    assert max(datasets.load_from_disk(str(out))["length"]) <= 64


def test_num_proc_gives_the_same_rows_and_counts(data, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    one = prepare_dataset([str(data)], tok, tmp_path / "one", max_length=128, over_length="drop")
    two = prepare_dataset([str(data)], tok, tmp_path / "two", max_length=128, over_length="drop", num_proc=2)
    assert one[-3:-1] == two[-3:-1]  # the same read/used/skipped and example counts
    rows = lambda p: sorted(map(tuple, datasets.load_from_disk(str(p))["input_ids"]))  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")


def test_bad_record_stops_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{oops\n')
    with pytest.raises(Exception, match=r"bad.jsonl:2: malformed JSON"):
        prepare_dataset([str(bad)], openhermes_tokenizer(pad="unk"), tmp_path / "o", num_proc=2)
    assert not (tmp_path / "o").exists()
