"""Reasoning replies and template arguments: Qwen3, DeepSeek-R1, Nemotron, Command-R7B, as their templates render them.

Qwen3 runs on the real Tekken vocabulary (`family_tokenizer("qwen3")`); the others on SmolLM2's tokenizer with TRL's
copy of each real template (`trl_tokenizer`).
"""

from __future__ import annotations

import json

import pytest
from transformers import DataCollatorForLanguageModeling
from typer.testing import CliRunner

from eosguard.chat.examples import build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.doctor import diagnose
from eosguard.checks.guard import StopTokenChecker
from eosguard.cli.app import app
from eosguard.data.conversations import Message, conversation
from eosguard.data.records import load_conversations
from eosguard.testing.fixtures import family_tokenizer, trl_tokenizer
from tests.helpers import trained_runs

_cache: dict[str, object] = {}


def qwen3():
    if "qwen3" not in _cache:
        _cache["qwen3"] = family_tokenizer("qwen3")
    return _cache["qwen3"]


def trained(tok, examples) -> list[str]:
    return [tok.decode(e.input_ids[run], skip_special_tokens=False) for e in examples for run in trained_runs(e.mask)]


THINKING = conversation(
    ("user", "2+2?"),
    Message("assistant", "4.", reasoning="Two and two make four."),
    ("user", "And 3+3?"),
    Message("assistant", "6.", reasoning="Three and three make six."),
)


def test_reasoning_is_rendered_by_the_template_and_trained_with_the_reply():
    tok = qwen3()
    examples = ChatRenderer(tok).render(THINKING)
    texts = trained(tok, examples)
    assert texts == [
        "<think>\nTwo and two make four.\n</think>\n\n4.<|im_end|>",
        "<think>\nThree and three make six.\n</think>\n\n6.<|im_end|>",
    ]
    # Qwen3 drops the reasoning of an earlier reply from history: that reply trains in an example of its own.
    assert [e.own for e in examples] == [True, False]
    assert examples[-1].input_ids.tolist() == tok.apply_chat_template(THINKING.as_dicts(), return_dict=False)


def test_a_think_block_in_content_reads_like_reasoning_content(tmp_path):
    path = tmp_path / "r.jsonl"
    msgs = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4."},
    ]
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    (conv,), _ = load_conversations(path)
    assert conv.messages[1] == Message("assistant", "4.", reasoning="Two and two.")
    assert trained(qwen3(), ChatRenderer(qwen3()).render(conv)) == ["<think>\nTwo and two.\n</think>\n\n4.<|im_end|>"]


@pytest.mark.parametrize(
    ("family", "policy", "examples", "own"),
    [
        ("qwen3", "all", 2, 1),  # the first reply is rewritten in history: apart; the second in the conversation
        ("qwen3", "each", 2, 1),
        ("qwen3", "last", 1, 0),
        ("chatml", "all", 1, 0),  # ChatML keeps history as it was: one example
        ("chatml", "each", 2, 1),  # one example per reply on request (the last is the conversation itself)
    ],
)
def test_examples_per_policy_and_their_cost_is_counted(family, policy, examples, own):
    tok = qwen3() if family == "qwen3" else family_tokenizer(family)
    conv = THINKING if family == "qwen3" else conversation(*[(m.role, m.content) for m in THINKING.messages])
    rows, stats = build_examples([conv], ChatRenderer(tok, train_on=policy), max_length=512)
    assert (stats.examples, stats.own_examples) == (examples, own)
    assert stats.own_tokens == sum(len(r["input_ids"]) for r in rows[:own])
    assert ("in examples of their own" in stats.summary()) == bool(own)
    assert stats.trained_tokens == sum(sum(y != -100 for y in r["labels"]) for r in rows)


def test_template_arguments_change_the_prompt_and_the_trained_text_alike():
    tok = qwen3()
    conv = conversation(("user", "Hi"), ("assistant", "Hello"))
    thinking = ChatRenderer(tok)
    off = ChatRenderer(tok, template_args={"enable_thinking": False})
    assert trained(tok, thinking.render(conv)) == ["<think>\n\n</think>\n\nHello<|im_end|>"]
    assert trained(tok, off.render(conv)) == ["Hello<|im_end|>"]  # the empty block is in the prompt now
    prompt = off.prompt_ids(conv.messages[:1])
    assert prompt == tok.apply_chat_template(
        conv.as_dicts()[:1], add_generation_prompt=True, enable_thinking=False, return_dict=False
    )
    (example,) = off.render(conv)
    assert example.input_ids[: len(prompt)].tolist() == prompt


def test_prepare_tokenizer_writes_the_arguments_into_the_saved_template(tmp_path):
    tok = family_tokenizer("qwen3")
    setup = prepare_tokenizer(tok, template_args={"enable_thinking": False})
    assert any("enable_thinking" in line for line in setup.lines())
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path)
    text = saved.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<think>\n\n</think>\n\n")  # any engine reading the folder renders as it was trained


def test_deepseek_r1_opened_block_is_closed_empty_or_around_the_reasoning_and_counted():
    tok = trl_tokenizer("deepseek_r1_distill")
    r = ChatRenderer(tok)
    plain = conversation(("user", "2+2?"), ("assistant", "4."))
    (example,) = r.render(plain)
    assert example.treated == 1
    assert trained(tok, [example]) == ["\n</think>\n\n4.<｜end▁of▁sentence｜>"]
    prompt = r.prompt_ids(plain.messages[:1])
    assert (
        tok.decode(prompt).endswith("<｜Assistant｜><think>\n") and example.input_ids[: len(prompt)].tolist() == prompt
    )
    thought = conversation(("user", "2+2?"), Message("assistant", "4.", reasoning="Two and two."))
    assert trained(tok, r.render(thought)) == ["Two and two.\n</think>\n\n4.<｜end▁of▁sentence｜>"]
    _, stats = build_examples([plain, thought], r, max_length=256)
    assert stats.treated == 2 and "closed empty" in stats.summary()


def test_the_doctor_names_the_template_argument_that_closes_an_opened_block():
    nemotron = diagnose(trl_tokenizer("nemotron_3_nano"))
    finding = next(f for f in nemotron.findings if f.id == "open-reasoning-block")
    assert "--template-arg enable_thinking=false" in finding.message and not nemotron.has_errors
    fixed = diagnose(trl_tokenizer("nemotron_3_nano"), template_args={"enable_thinking": False})
    assert "open-reasoning-block" not in fixed.ids
    r1 = next(f for f in diagnose(trl_tokenizer("deepseek_r1_distill")).findings if f.id == "open-reasoning-block")
    assert "no template argument makes the prompt close it" in r1.message


def test_doctor_reports_replies_rewritten_in_history_for_whole_conversation_collators():
    # Qwen3 drops earlier reasoning but keeps <|im_end|> after every reply: every stop token is still trained, so
    # the rewriting is a warning (exit 0), not "the stop token is lost".
    tok = family_tokenizer("qwen3")
    prepare_tokenizer(tok)
    report = diagnose(tok, conversations=[THINKING], collator="transformers")
    found = next(f for f in report.findings if f.id == "reply-rewritten")
    assert found.count == 1 and found.severity == "warning" and not report.has_errors
    assert "stop-rewritten" not in report.ids and report.facts["collator"]["stop_masked"] == 0
    ours = diagnose(tok, conversations=[THINKING], collator="eosguard")
    assert "reply-rewritten" not in ours.ids and not ours.has_errors
    assert "1 replies trained in examples of their own" in next(s.detail for s in ours.steps if s.title == "data")


def test_a_rewriting_that_changes_the_closing_token_is_an_error():
    # gpt-oss closes a last final answer with <|return|> and the same answer in history with <|end|>: a
    # whole-conversation pipeline trains <|end|> after it, a token the model does not stop on.
    tok = trl_tokenizer("gptoss")
    prepare_tokenizer(tok)
    conv = conversation(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "See you"))
    assert ChatTemplate(tok).closers["reply"].in_history is False
    report = diagnose(tok, conversations=[conv], collator="transformers")
    found = next(f for f in report.findings if f.id == "stop-rewritten")
    assert found.count == 1 and report.has_errors and "<|return|>" in found.message
    assert not diagnose(tok, conversations=[conv], collator="eosguard").has_errors


def test_command_r7b_closing_sequence_is_trained_whole_and_its_stop_token_masked_is_caught():
    tok = trl_tokenizer("cohere2")
    t = ChatTemplate(tok)
    assert t.closers["reply"].sequence == ("<|END_RESPONSE|>", "<|END_OF_TURN_TOKEN|>")
    conv = conversation(("user", "Hi"), ("assistant", "Hello"))
    assert trained(tok, ChatRenderer(tok).render(conv)) == ["Hello<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]
    for pad in ("<|END_OF_TURN_TOKEN|>", "<|END_RESPONSE|>"):  # either token of the sequence masked: caught
        broken = trl_tokenizer("cohere2")
        broken.pad_token = pad
        report = diagnose(broken, conversations=[conv], collator="transformers")
        assert "eos-masked" in report.ids, pad
    rows = [ChatRenderer(tok).render(conv)[0].to_example()]
    check = StopTokenChecker(tok).check_batch(DataCollatorForLanguageModeling(tok, mlm=False)(rows))
    assert check.stop_trained == check.supervised_turns == 1


def test_reasoning_on_a_template_without_reasoning_support_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"messages": THINKING.as_dicts()}) + "\n")
    (conv,), _ = load_conversations(path)
    with pytest.raises(TemplateError, match=rf"{path}:1: message 1 has reasoning, which the chat template does not"):
        ChatRenderer(family_tokenizer("llama3")).render(conv)


def test_content_the_template_tests_goes_through_the_template_itself():
    """GLM appends `/nothink` to a user message unless it already ends with it: content holding that text takes
    the general path, and equals the template's own rendering."""
    tok = trl_tokenizer("glm4moe")
    r = ChatRenderer(tok, template_args={"enable_thinking": False})
    assert "/nothink" in r.template.content_tests
    for text in ("Hi", "Hi /nothink"):
        conv = conversation(("user", text), ("assistant", "Hello"))
        (example,) = r.render(conv)
        expected = tok.apply_chat_template(conv.as_dicts(), tokenize=True, return_dict=False, enable_thinking=False)
        assert example.input_ids[:-1].tolist() == expected  # and the appended <|user|> that closes the reply


@pytest.mark.slow
def test_cli_prepare_takes_template_arguments_and_tools(tmp_path):
    tok = family_tokenizer("qwen3")
    prepare_tokenizer(tok)
    tok.save_pretrained(tmp_path / "tok")
    data = tmp_path / "d.jsonl"
    plain = conversation(*[(m.role, m.content) for m in THINKING.messages])
    data.write_text(json.dumps({"messages": plain.as_dicts()}) + "\n")
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "f", "parameters": {}}}]))
    args = ["prepare", str(data), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(app, [*args, "--template-arg", "enable_thinking=false", "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    assert "template arguments" in result.output and "replies trained in examples of their own" in result.output
    bad = CliRunner().invoke(app, [*args, "--template-arg", "enable_thinking"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output
    data.write_text(json.dumps({"messages": THINKING.as_dicts()}) + "\n")  # reasoning, but thinking turned off
    clash = CliRunner().invoke(app, [*args, "--template-arg", "enable_thinking=false"])
    assert clash.exit_code == 2 and f"{data}:1: message 1 has reasoning, but its generation prompt" in clash.output


@pytest.mark.parametrize("name", ["deepseek_r1_distill", "deepseekv3", "nemotron_3_nano", "qwen3_5_think"])
def test_reasoning_templates_train_alike_where_think_is_plain_text(name):
    """R1-style reasoning distilled into a small model whose vocabulary has no <think> token (SmolLM2 as shipped,
    whose BPE merges the newline after `<think>` with the next): the same replies are trained as with the tags as
    tokens, and each generation prompt is a token prefix of its example."""
    convs = [THINKING, conversation(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))]
    texts = {}
    for tags in (True, False):
        tok = trl_tokenizer(name, tags=tags)
        renderer = ChatRenderer(tok)
        assert ("<think>" in tok.get_added_vocab()) == tags
        texts[tags] = []
        for conv in convs:
            prompts = [
                renderer.prompt_ids(conv.messages[:k]) for k, m in enumerate(conv.messages) if m.role == "assistant"
            ]
            for example in renderer.render(conv):
                texts[tags] += trained(tok, [example])
                for run in trained_runs(example.mask):  # what precedes each trained reply is a generation prompt
                    assert example.input_ids[: run[0]].tolist() in prompts
        assert len(texts[tags]) >= 3 and all(t.endswith(tuple(renderer.template.stop_tokens)) for t in texts[tags])
    assert texts[True] == texts[False]


def test_prepare_trains_deepseek_r1_on_smollm2s_own_tokenizer(tmp_path):
    tok = trl_tokenizer("deepseek_r1_distill", tags=False)
    tok.save_pretrained(tmp_path / "tok")
    data = tmp_path / "d.jsonl"
    one = conversation(("system", "Be brief."), ("user", "Add: 2 + 2"), ("assistant", "4"))
    data.write_text(json.dumps({"messages": one.as_dicts()}) + "\n")
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prepare", str(data), "--tokenizer", str(tmp_path / "tok"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    from datasets import load_from_disk

    row = load_from_disk(str(out))[0]
    trained_ids = [i for i, y in zip(row["input_ids"], row["labels"], strict=True) if y != -100]
    assert tok.decode(trained_ids) == "\n</think>\n\n4<｜end▁of▁sentence｜>"
