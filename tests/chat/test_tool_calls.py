"""Tool-calling conversations on the families with tool support: ids, trained spans, tool results, the guard.

Qwen2.5, Qwen3, Llama-3.1 and gpt-oss with their real templates (TRL's copies) on the real Tekken vocabulary, and
Mistral v7 with the template Mistral's own library (mistral-common) generates for its vocabulary.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DataCollatorForLanguageModeling

from eosguard.base.errors import DataError, StopTokenLossError
from eosguard.chat.examples import build_examples
from eosguard.chat.render import IGNORE_INDEX, ChatRenderer
from eosguard.chat.templates import TemplateError
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.doctor import diagnose
from eosguard.checks.guard import guard
from eosguard.data.conversations import Message, ToolCall, conversation
from eosguard.data.records import load_conversations
from eosguard.testing.families import FAMILIES
from eosguard.testing.fixtures import family_tokenizer
from tests.helpers import trained_runs

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
NAMES = [n for n, f in FAMILIES.items() if f.tool_call_end is not None]
PARALLEL = {"qwen2.5": True, "qwen3": True, "llama3": False, "gpt-oss": False, "mistral-v7": True}
_cache: dict[str, object] = {}


def tokenizer(name: str):
    if name not in _cache:
        _cache[name] = family_tokenizer(name)
    return _cache[name]


def call(city: str, j: int) -> ToolCall:
    return ToolCall("get_weather", {"city": city}, f"callid00{j}")  # Mistral's templates want 9-character ids


def agent(cities: list[str], answer: str, *, final: bool = True, system: bool = True, tools=TOOLS):
    """A user asks, the assistant calls the tool (once per city, in one turn), each call is answered, the assistant
    answers; final=False ends the conversation on the tool call (the turn being trained)."""
    calls = tuple(call(c, j) for j, c in enumerate(cities))
    msgs: list = [("system", "You answer with the weather tool.")] if system else []
    msgs += [("user", f"Weather in {' and '.join(cities)}?"), Message("assistant", "", tool_calls=calls)]
    if final:
        msgs += [Message("tool", f"{15 + j}C", tool_call_id=c.id) for j, c in enumerate(calls)]
        msgs.append(("assistant", answer))
    return conversation(*msgs, tools=tools)


def decoded_runs(tok, example) -> list[str]:
    return [tok.decode(example.input_ids[run], skip_special_tokens=False) for run in trained_runs(example.mask)]


@pytest.mark.parametrize("name", NAMES)
def test_ids_equal_apply_chat_template_with_tools_and_each_reply_ends_with_its_closer(name):
    tok = tokenizer(name)
    r = ChatRenderer(tok)
    cities = ["Paris", "Rome"] if PARALLEL[name] else ["Paris"]
    conv = agent(cities, "Sunny everywhere.")
    examples = r.render(conv)
    reference = tok.apply_chat_template(conv.as_dicts(), tools=TOOLS, tokenize=True, return_dict=False)
    assert examples[-1].input_ids.tolist() == reference  # the whole conversation, as the template writes it
    texts = [t for e in examples for t in decoded_runs(tok, e)]
    assert len(texts) == 2  # the tool call, the final answer
    end = FAMILIES[name].tool_call_end
    assert texts[0].endswith(end) and all(c in texts[0] for c in cities) and "get_weather" in texts[0]
    assert texts[1].endswith(FAMILIES[name].end_of_turn) and "Sunny everywhere." in texts[1]
    for e in examples:  # tool results are context, never trained
        for j in range(len(cities)):
            result = tok.encode(f"{15 + j}C", add_special_tokens=False)
            trained = e.input_ids[e.mask].tolist()
            assert not any(trained[i : i + len(result)] == result for i in range(len(trained)))


@pytest.mark.parametrize("name", NAMES)
def test_a_conversation_that_ends_on_a_tool_call_trains_the_call_through_its_closer(name):
    tok = tokenizer(name)
    conv = agent(["Oslo"], "", final=False)
    (example,) = ChatRenderer(tok).render(conv)
    (text,) = decoded_runs(tok, example)
    assert text.endswith(FAMILIES[name].tool_call_end) and "Oslo" in text
    assert example.input_ids[example.closings[0][1]] == tok.convert_tokens_to_ids(FAMILIES[name].tool_call_end)
    prompt = ChatRenderer(tok).prompt_ids(conv.messages[:-1], tools=TOOLS)
    assert example.input_ids[: len(prompt)].tolist() == prompt  # trained after exactly what inference sends


_city = st.sampled_from(["Paris", "Rome", "Oslo", "Lima", "Kyiv <|im_end|>", "São Paulo", 'Quote "q"'])
_text = st.text(alphabet="abcdefgh XYZ.,!?0123\n", min_size=1, max_size=24).filter(lambda s: s.strip())


@pytest.mark.parametrize("name", NAMES)
def test_random_tool_conversations_train_every_reply_with_a_stop_token(name):
    tok = tokenizer(name)
    r = ChatRenderer(tok)
    stops = set(r.stop_ids)

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        cities=st.lists(_city, min_size=1, max_size=2 if PARALLEL[name] else 1, unique=True),
        answer=_text,
        final=st.booleans(),
        system=st.booleans(),
    )
    def check(cities, answer, final, system):
        conv = agent(cities, answer, final=final, system=system)
        examples = r.render(conv)
        replies = [m for m in conv.messages if m.role == "assistant"]
        runs = [(e, run) for e in examples for run in trained_runs(e.mask)]
        assert len(runs) == len(replies)
        for e, run in runs:
            assert e.input_ids[run[-1]] in stops and not stops & set(e.input_ids[run[:-1]].tolist())
        full = tok.apply_chat_template(conv.as_dicts(), tools=TOOLS, tokenize=False)
        assert r.template.decode_marked(r.marked(conv)[-1].text) == full  # the last example: the whole conversation

    check()


def test_the_guard_catches_a_masked_tool_call_closer_and_passes_the_fix():
    tok = family_tokenizer("qwen2.5", pad="eot")  # pad = <|im_end|>: closes tool calls and answers alike
    conv = agent(["Paris"], "Sunny.")
    text = tok.apply_chat_template(conv.as_dicts(), tools=TOOLS, tokenize=False)
    features = [tok(text, add_special_tokens=False)]
    with pytest.raises(StopTokenLossError, match=r"2 of 2 assistant turns"):
        guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)(features)
    prepare_tokenizer(tok)
    batch = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)(features)
    assert (batch["labels"] != IGNORE_INDEX).any()


def test_doctor_counts_tool_call_replies_in_the_collator_step():
    tok = family_tokenizer("gpt-oss", pad="eot")
    convs = [agent(["Paris"], "Sunny."), agent(["Rome"], "Rainy.")]
    report = diagnose(tok, conversations=convs, collator="eosguard", tools=TOOLS)
    assert report.facts["collator"]["stop_trained"] == 4 and not report.has_errors
    assert report.facts["stop_tokens"] == ["<|return|>", "<|call|>"]


def test_tool_calls_on_a_template_without_tool_support_are_refused():
    tok = family_tokenizer("gemma")
    with pytest.raises(TemplateError, match="message 1 makes tool calls: the chat template does not render"):
        ChatRenderer(tok).render(agent(["Paris"], "Sunny.", system=False, tools=None))
    with pytest.raises(TemplateError, match="the chat template does not render the conversation's `tools`"):
        ChatRenderer(tok).render(agent(["Paris"], "Sunny.", system=False))


def test_arguments_as_a_json_string_and_flat_calls_read_like_objects(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"name": "get_weather", "arguments": '{"city": "Rome"}'}],
            },
            {"role": "tool", "content": "20C"},
            {"role": "assistant", "content": "20C."},
        ],
        "tools": json.dumps(TOOLS),
    }
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (conv,), _ = load_conversations(path)
    assert conv.messages[1].tool_calls == (ToolCall("get_weather", {"city": "Rome"}),)
    assert conv.tools == tuple(TOOLS)


def test_sharegpt_function_call_and_observation_turns(tmp_path):
    record = {
        "conversations": [
            {"from": "human", "value": "Weather in Rome?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Rome"}})},
            {"from": "observation", "value": "20C"},
            {"from": "gpt", "value": "20C in Rome."},
        ],
        "tools": json.dumps(TOOLS),
    }
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (conv,), _ = load_conversations(path)
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    examples = ChatRenderer(tokenizer("qwen2.5")).render(conv)
    assert sum(len(trained_runs(e.mask)) for e in examples) == 2


def test_a_bad_tools_file_names_the_file():
    from eosguard.data.records import load_tools

    with pytest.raises(DataError, match="no such file"):
        load_tools("/nonexistent/tools.json")


@pytest.mark.parametrize("name", [n for n in NAMES if not PARALLEL[n]])
def test_a_turn_of_two_calls_is_split_into_one_message_per_call_where_the_template_renders_one(name):
    tok = tokenizer(name)
    conv = agent(["Paris", "Rome"], "15C and 16C.")
    renderer = ChatRenderer(tok)
    messages, split = renderer.split_calls(conv)
    assert split == 1 and [len(m.tool_calls) for m in messages if m.role == "assistant"] == [1, 1, 0]
    rows, stats = build_examples([conv], renderer, max_length=4096)
    assert stats.split_turns == 1 and "1 turns of several tool calls split" in stats.summary()
    trained = [
        tok.decode([r["input_ids"][j] for j in run])
        for r in rows
        for run in trained_runs([y != IGNORE_INDEX for y in r["labels"]])
    ]
    stops = ChatRenderer(tok).template.closers["tool_call"].token
    calls = [t for t in trained if "Paris" in t or "Rome" in t]
    assert len(calls) == 2 and all(t.endswith(stops) for t in calls), trained  # each call through its own closer


def test_prepare_splits_a_gpt_oss_turn_of_two_calls_and_says_so(tmp_path):
    from typer.testing import CliRunner

    from eosguard.cli.app import app

    tok = tokenizer("gpt-oss")
    tok.save_pretrained(tmp_path / "tok")
    conv = agent(["Paris", "Rome"], "15C and 16C.")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": conv.as_dicts(), "tools": TOOLS}) + "\n")
    args = ["prepare", str(data), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 turns of several tool calls split into one message per call" in " ".join(result.output.split())
