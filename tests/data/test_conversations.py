import json
from pathlib import Path

import pytest

from eosguard.base.errors import DataError
from eosguard.data.conversations import Message, conversation
from eosguard.data.records import load_conversations


def _write(tmp_path: Path, lines: list[str] | bytes, name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return p


GOOD = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
SHAREGPT = json.dumps(
    {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A", "weight": 0},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ]
    }
)


def test_reads_both_shapes(tmp_path):
    convs, rep = load_conversations(_write(tmp_path, [GOOD, SHAREGPT]))
    assert rep.summary() == "read 2 records, used 2, skipped 0"
    assert convs[0].messages == (Message("user", "Hi"), Message("assistant", "Hello"))
    assert [m.role for m in convs[1].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[1].messages[2].train is False and convs[1].messages[4].train is None
    assert convs[1].line == 2


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ('{"messages": [{"role": "user", "content": "Hi"}', "malformed JSON"),
        (
            '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "unknown role 'robot'",
        ),
        ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}', "content is empty"),
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}', "must be a string"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "no assistant turn"),
        ('{"messages": "nope"}', "must be a list"),
        ('{"text": "plain"}', "neither 'messages' nor 'conversations'"),
        ("[1, 2]", "must be a JSON object"),
        ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}', "missing 'content'"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, '
            '{"role": "assistant", "content": "y"}]}',
            "system message may only come first",
        ),
        ('{"messages": [{"role": "assistant", "content": "y"}]}', "answers no user turn"),
        ('{"messages": [{"role": "user", "content": "a\\u0000b"}, {"role": "assistant", "content": "y"}]}', "NUL"),
    ],
)
def test_bad_record_names_file_line_and_reason(tmp_path, record, reason):
    path = _write(tmp_path, [GOOD, record])
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert info.value.line == 2 and info.value.path == str(path)
    assert reason in str(info.value)
    assert str(info.value).startswith(f"{path}:2: ")


def test_skip_invalid_counts_every_skip(tmp_path):
    bad = '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}'
    convs, rep = load_conversations(_write(tmp_path, [GOOD, bad, "{oops", GOOD]), skip_invalid=True)
    assert len(convs) == 2 and rep.read == 4 and rep.used == 2 and len(rep.skipped) == 2
    assert [s[1] for s in rep.skipped] == [2, 3]


def test_bom_crlf_and_invalid_utf8(tmp_path):
    convs, _ = load_conversations(_write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n" + GOOD.encode() + b"\r\n"))
    assert len(convs) == 2
    with pytest.raises(DataError, match=r":2: invalid UTF-8"):
        load_conversations(_write(tmp_path, GOOD.encode() + b"\n\xff\xfe{}\n", "bad.jsonl"))


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_conversations(_write(tmp_path, b""))
    with pytest.raises(DataError, match="no such file"):
        load_conversations(tmp_path / "missing.jsonl")


def test_datasets_folder_and_parquet(tmp_path):
    import datasets

    rows = [json.loads(GOOD)] * 3
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "one.parquet"))
    assert len(load_conversations(tmp_path / "saved")[0]) == 3
    assert len(load_conversations(tmp_path / "one.parquet")[0]) == 3


def test_conversation_helper_validates():
    with pytest.raises(ValueError, match="no assistant turn"):
        conversation(("user", "hi"))


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        ('{"role": "assistant", "content": "y", "train": 1}', "'train' must be true or false, got 1"),
        ('{"from": "gpt", "value": "y", "weight": 2}', "'weight' must be 1 or 0, got 2"),
        ('{"from": "gpt", "value": "y", "weight": true}', "'weight' must be 1 or 0, got True"),
        ('{"from": "robot", "value": "y"}', "unknown speaker 'robot'"),
        ('{"role": 5, "content": "y"}', "unknown role 5"),
    ],
)
def test_training_flags_and_speakers(tmp_path, turn, reason):
    key, first = ("messages", '{"role": "user", "content": "q"}')
    if '"from"' in turn:
        key, first = ("conversations", '{"from": "human", "value": "q"}')
    path = _write(tmp_path, [f'{{"{key}": [{first}, {turn}]}}'])
    with pytest.raises(DataError, match=reason.replace("(", r"\(")):
        load_conversations(path)
