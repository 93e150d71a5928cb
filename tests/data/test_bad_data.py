"""Every malformed or hostile input in tests/inputs/bad/: a clear error with file and line, or a counted skip."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eosguard.base.errors import DataError
from eosguard.chat.examples import build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.cli.app import app
from eosguard.data.records import load_conversations

BAD = Path(__file__).parents[1] / "inputs" / "bad"
runner = CliRunner()

# file -> (line, words the error must contain)
ERRORS = {
    "truncated_json.jsonl": (2, "malformed JSON"),
    "wrong_types.jsonl": (2, "content part 0 must be an object with a 'type'"),
    "messages_not_list.jsonl": (1, "'messages' must be a list"),
    "missing_fields.jsonl": (2, "messages[0] is missing 'role'"),
    "unknown_roles.jsonl": (1, "unknown role 'robot'"),
    "tool_answers_no_call.jsonl": (2, "a tool result that answers no open tool call"),
    "tool_call_never_answered.jsonl": (1, "tool call 'get_weather' (id 'c1') is never answered before message 2"),
    "tool_arguments_not_json.jsonl": (3, "messages[1].tool_calls[0]: arguments are not JSON"),
    "image_part.jsonl": (1, "content part 1 has type 'image_url': eosguard trains on text only"),
    "unclosed_think.jsonl": (1, "content opens <think> but never closes it with </think>"),
    "empty_content.jsonl": (3, "content is empty"),
    "invalid_utf8.jsonl": (2, "invalid UTF-8"),
    "nul_bytes.jsonl": (2, "malformed JSON: Invalid control character"),
    "nul_escape.jsonl": (1, "NUL character"),
    "mixed_formats.jsonl": (3, "both 'messages' and 'conversations'"),
    "only_system.jsonl": (1, "no assistant turn"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_bad_file_names_file_line_and_reason(name):
    line, words = ERRORS[name]
    with pytest.raises(DataError) as info:
        load_conversations(BAD / name)
    assert str(info.value).startswith(f"{BAD / name}:{line}: ") and words in str(info.value)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_skip_invalid_counts_instead(name):
    line, words = ERRORS[name]
    try:
        convs, rep = load_conversations(BAD / name, skip_invalid=True)
    except DataError as exc:  # a file with no valid record at all is still an error, saying so
        assert "every record was invalid" in str(exc) and words.split(":")[0] in str(exc)
        return
    assert rep.read == rep.used + len(rep.skipped) and rep.skipped[0][1] == line
    assert len(convs) == rep.used


def test_accepted_quirks_bom_crlf_mixed():
    assert len(load_conversations(BAD / "bom.jsonl")[0]) == 2
    assert len(load_conversations(BAD / "crlf.jsonl")[0]) == 2
    convs, rep = load_conversations(BAD / "mixed_formats.jsonl", skip_invalid=True)
    assert [c.messages[-1].content for c in convs] == ["Hello", "A"] and len(rep.skipped) == 1


def test_empty_file():
    with pytest.raises(DataError, match="no records found"):
        load_conversations(BAD / "empty.jsonl")


def test_huge_content_is_counted_by_the_over_length_policy(tok):
    convs, _ = load_conversations(BAD / "huge_content.jsonl")
    assert len(convs[0].messages[1].content) == 10_000_000
    renderer = ChatRenderer(tok)
    kept, stats = build_examples(convs, renderer, max_length=512, over_length="truncate")
    assert stats.truncated == 1 and len(kept[0]["input_ids"]) == 512 and kept[0]["labels"][-1] == 32000
    _, dropped = build_examples(convs, renderer, max_length=512, over_length="drop")
    assert dropped.dropped_too_long == 1 and dropped.examples == 0


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_cli_reports_without_traceback(tokenizer_dirs, name):
    result = runner.invoke(app, ["doctor", "--tokenizer", str(tokenizer_dirs["unk"]), "--data", str(BAD / name)])
    assert result.exit_code == 2 and f"{name}:{ERRORS[name][0]}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "num_proc"),
    [*((n, 1) for n in [*sorted(ERRORS), "empty.jsonl"]), ("truncated_json.jsonl", 2), ("only_system.jsonl", 2)],
)
def test_prepare_names_file_line_and_leaves_nothing(tokenizer_dirs, tmp_path, name, num_proc):
    out = tmp_path / "p"
    args = ["prepare", str(BAD / name), "--tokenizer", str(tokenizer_dirs["unk"]), "--out", str(out)]
    result = runner.invoke(app, [*args, "--num-proc", str(num_proc)])
    expected = f"{name}: no records found" if name == "empty.jsonl" else f"{name}:{ERRORS[name][0]}: "
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_prepare_reports_read_used_skipped(tokenizer_dirs, tmp_path):
    import datasets

    result = runner.invoke(
        app,
        [
            "prepare",
            str(BAD / "mixed_formats.jsonl"),
            str(BAD / "unknown_roles.jsonl"),
            "--tokenizer",
            str(tokenizer_dirs["unk"]),
            "--out",
            str(tmp_path / "p"),
            "--skip-invalid",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "read 4 records, used 2, skipped 2" in result.output
    ds = datasets.load_from_disk(str(tmp_path / "p"))
    assert len(ds) == 2 and set(ds.column_names) >= {"input_ids", "labels"}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["messages", "conversations", "role", "content", "from", "value", "train", "weight", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_json_values.map(json.dumps).map(str.encode), st.binary(max_size=40)), max_size=5))
def test_reader_fuzz_only_ever_raises_data_errors(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    for skip in (False, True):
        try:
            convs, rep = load_conversations(path, skip_invalid=skip)
        except DataError as exc:
            assert str(path) in str(exc)
            continue
        assert rep.read == rep.used + len(rep.skipped) and len(convs) == rep.used
