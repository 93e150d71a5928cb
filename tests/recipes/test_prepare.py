"""`eosguard prepare`: a datasets folder with the tokenizer's own ids, cached by content, parallel-safe."""

import json
import sys
import time
from pathlib import Path

import datasets
import pytest

from eosguard.chat.render import IGNORE_INDEX
from eosguard.chat.settings import RenderSettings
from eosguard.recipes.prepare import MANIFEST, prepare_dataset
from eosguard.testing.fixtures import openhermes_tokenizer

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
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
    summary = prepare_dataset([str(data)], tok, tmp_path / "out", RenderSettings(max_length=4096))
    assert any("read 300 records, used 300, skipped 0" in line for line in summary)
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 300 and {"input_ids", "labels", "length"} <= set(ds.column_names)
    assert ds.features["labels"] == datasets.List(datasets.Value("int32"))  # the declared types, read back
    assert ds.features["length"] == datasets.Value("int32")
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
    prepare_dataset([str(data)], tok, out, RenderSettings(max_length=4096))
    written = (out / MANIFEST).stat().st_mtime_ns
    start = time.perf_counter()
    summary = prepare_dataset([str(data)], tok, out, RenderSettings(max_length=4096))
    assert summary[-1].startswith("cached:") and time.perf_counter() - start < 2.0
    assert (out / MANIFEST).stat().st_mtime_ns == written
    again = prepare_dataset([str(data)], tok, out, RenderSettings(max_length=64))  # another option: recomputed
    assert not again[-1].startswith("cached:")
    assert max(datasets.load_from_disk(str(out))["length"]) <= 64


def test_num_proc_gives_the_same_rows_and_counts(data, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    one = prepare_dataset([str(data)], tok, tmp_path / "one", RenderSettings(max_length=128, over_length="drop"))
    two = prepare_dataset(
        [str(data)], tok, tmp_path / "two", RenderSettings(max_length=128, over_length="drop"), num_proc=2
    )
    assert one[-3:-1] == two[-3:-1]  # the same read/used/skipped and example counts
    rows = lambda p: datasets.load_from_disk(str(p))[:]  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")  # the same rows, in file order


def test_bad_record_stops_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{oops\n')
    with pytest.raises(Exception, match=r"bad.jsonl:2: malformed JSON"):
        prepare_dataset([str(bad)], openhermes_tokenizer(pad="unk"), tmp_path / "o", num_proc=2)
    assert not (tmp_path / "o").exists()


def _good(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})


@pytest.mark.parametrize("num_proc", [1, 2])
def test_the_first_bad_record_in_file_order_is_the_one_reported(tmp_path, num_proc):
    """Runs of 7 lines go to 2 processes: the bad line 30 is in a later run than line 12 but may finish first."""
    lines = [_good(i) for i in range(1, 41)]
    lines[11] = '{"messages": [{"role": "user", "content": "q"}]}'  # line 12: no assistant turn
    lines[29] = "{oops"  # line 30
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:12: ") as caught:
        prepare_dataset([str(bad)], openhermes_tokenizer(pad="unk"), tmp_path / "o", num_proc=num_proc, run_size=7)
    assert caught.value.hint and "--skip-invalid" in caught.value.hint  # the error crossed processes whole
    assert not (tmp_path / "o").exists()
    summary = prepare_dataset(
        [str(bad)],
        openhermes_tokenizer(pad="unk"),
        tmp_path / "o",
        RenderSettings(skip_invalid=True),
        num_proc=num_proc,
        run_size=7,
    )
    assert any("read 40 records, used 38, skipped 2" in line for line in summary)
    tok = openhermes_tokenizer(pad="unk")
    trained = [
        tok.decode([i for i, y in zip(row["input_ids"], row["labels"], strict=True) if y != IGNORE_INDEX])
        for row in datasets.load_from_disk(str(tmp_path / "o"))
    ]
    assert trained == [f"a{i}<|im_end|>" for i in range(1, 41) if i not in (12, 30)]  # every other line, in order


def test_rows_of_a_dataset_folder_keep_their_numbers_across_runs(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(10)
    ]
    rows[6]["messages"] = rows[6]["messages"][:1]  # row 7: no assistant turn
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "chats.parquet"))
    with pytest.raises(Exception, match=r"chats.parquet:7: "):
        prepare_dataset([str(tmp_path / "chats.parquet")], openhermes_tokenizer(pad="unk"), tmp_path / "o", run_size=3)


def test_an_example_too_long_under_over_length_error_names_its_line(tmp_path, data):
    with pytest.raises(Exception, match=r"chats.jsonl:1: example of \d+ tokens is longer than max_length=16"):
        prepare_dataset(
            [str(data)],
            openhermes_tokenizer(pad="unk"),
            tmp_path / "o",
            RenderSettings(max_length=16, over_length="error"),
        )


def test_preference_pairs_stop_short_on_the_rejected_side():
    """The demo's pairs: chosen the right answer, rejected the same answer stopped short (a prefix of it)."""
    from eosguard.recipes.tasks import PAIR_TASKS, preference_pairs

    pairs = preference_pairs(list(PAIR_TASKS), 40, seed=3)
    assert {p["task"] for p in pairs} == set(PAIR_TASKS)
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen.startswith(rejected) and len(rejected) < len(chosen)
