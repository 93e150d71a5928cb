"""The template reader against TRL's own `_training` twins: every text template TRL ships, every reply trained.

Each template of `eosguard.testing.families.TRL_TEMPLATES` is put on SmolLM2's real tokenizer (`trl_tokenizer`); seeded
multi-turn chats go through eosguard's renderer and through `apply_chat_template(X_training.jinja,
return_assistant_tokens_mask=True)`, and the trained text is compared reply by reply. Every difference must be one
the families table declares (and the docs explain); every reply must be trained, each closed by a stop token.
"""

from __future__ import annotations

import random

import pytest

from eosguard.chat.render import ChatRenderer
from eosguard.chat.template_args import TemplateArgumentError, template_arguments, with_arguments
from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.data.conversations import conversation
from eosguard.testing.families import DIFFERENCES, TRL_TEMPLATES
from eosguard.testing.fixtures import trl_template, trl_tokenizer
from tests.helpers import trained_runs

WORDS = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "four", "sky", "red", "blue", "green"]
_tokenizers: dict[str, object] = {}


def tokenizer(name: str):
    if name not in _tokenizers:
        _tokenizers[name] = trl_tokenizer(name)
    return _tokenizers[name]


def chats(name: str, n: int = 24, seed: int = 0):
    """Seeded multi-turn chats (2-3 exchanges), with a system message in every third where the template takes one."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        msgs = []
        if TRL_TEMPLATES[name].system and i % 3 == 0:
            msgs.append(("system", " ".join(rng.choices(WORDS, k=3))))
        for _ in range(2 + i % 2):
            msgs.append(("user", " ".join(rng.choices(WORDS, k=rng.randint(1, 5)))))
            msgs.append(("assistant", " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))))
        out.append(conversation(*msgs))
    return out


def classify(ours: str, theirs: str, prompt: str, content: str) -> set[str]:
    """How one reply's trained text differs from TRL's: a set of `DIFFERENCES` keys (empty: equal). Both must hold
    the reply's content once; what comes before and after it is compared."""
    assert ours.count(content) == 1 and theirs.count(content) == 1, (ours, theirs, content)
    before_o, after_o = ours.split(content)
    before_t, after_t = theirs.split(content)
    found: set[str] = set()
    if before_t != before_o:
        extra = before_t[: len(before_t) - len(before_o)] if before_t.endswith(before_o) else None
        if extra is not None and (prompt.endswith(extra) or prompt.rstrip().endswith(extra)):
            found.add("prompt-block" if "think" in extra else "header")
        elif "</think>" in before_o and "</think>" not in before_t and prompt.endswith("<think>\n"):
            found.add("closed-block")
        else:
            found.add(f"before: {before_o!r} vs {before_t!r}")
    if after_t != after_o:
        if after_t.startswith(after_o) and not after_t[len(after_o) :].strip():
            found.add("newline")
        elif after_t.startswith(after_o) and after_t[len(after_o) :].strip():
            found.add("trailing-eos")
            if after_t[len(after_o) :].startswith("\n"):
                found.add("newline")
        elif after_o.endswith("<|return|>") and after_t.endswith("<|end|>"):
            found.add("history-closer")
        else:
            found.add(f"after: {after_o!r} vs {after_t!r}")
    return found


@pytest.mark.parametrize("name", sorted(TRL_TEMPLATES))
def test_every_reply_is_trained_as_trl_trains_it_or_a_declared_difference(name):
    tok = tokenizer(name)
    twin = trl_template(f"{name}_training.jinja")
    renderer = ChatRenderer(tok)
    stops = set(renderer.stop_ids)
    seen: set[str] = set()
    for conv in chats(name):
        replies = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        ours: dict[int, tuple[str, str]] = {}
        for example in renderer.render(conv):
            assert len(example.closings) == len(trained_runs(example.mask))
            for (_closing, stop), run in zip(example.closings, trained_runs(example.mask), strict=True):
                assert stop == run[-1] and example.input_ids[stop] in stops  # every reply ends with a stop token
                text = tok.decode(example.input_ids[run], skip_special_tokens=False)
                prompt = tok.decode(example.input_ids[: run[0]], skip_special_tokens=False)
                k = next(k for k in replies if k not in ours and conv.messages[k].content in text)
                ours[k] = (text, prompt)
        assert sorted(ours) == replies, "every reply of a multi-turn chat is trained"
        out = tok.apply_chat_template(
            conv.as_dicts(), chat_template=twin, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = out["input_ids"], out["assistant_masks"]
        theirs = [tok.decode([ids[j] for j in run], skip_special_tokens=False) for run in trained_runs(mask)]
        assert len(theirs) == len(replies)
        for k, text in zip(replies, theirs, strict=True):
            seen |= classify(ours[k][0], text, ours[k][1], conv.messages[k].content)
    assert seen == set(TRL_TEMPLATES[name].differences), f"{name}: {sorted(seen)}"
    assert seen <= set(DIFFERENCES)


CLOSERS = {  # what each template closes a final answer and a tool call with (None: it renders no tool calls)
    "cohere2": ("<|END_RESPONSE|><|END_OF_TURN_TOKEN|>", None),
    "qwen2_5": ("<|im_end|>", "</tool_call><|im_end|>"),
    "qwen3": ("<|im_end|>", "</tool_call><|im_end|>"),
    "gptoss": ("<|return|>", "<|call|>"),
    "glm4moe": ("<|user|>", "<|observation|>"),  # the next turn's token: appended after a last reply
    "deepseek_r1_distill": ("<｜end▁of▁sentence｜>", None),
    "llama3": ("<|eot_id|>", None),
    "phi3": ("<|end|>", None),
}


@pytest.mark.parametrize("name", sorted(CLOSERS))
def test_closing_sequences_are_read_off_the_template(name):
    t = ChatTemplate(tokenizer(name))
    reply, call = CLOSERS[name]
    assert "".join(t.closers["reply"].sequence) == reply
    assert t.end_of_turn == t.closers["reply"].token == t.closers["reply"].sequence[-1]
    if call is None:
        assert "tool_call" not in t.closers and t.problems["tool_call"]
    else:
        assert "".join(t.closers["tool_call"].sequence) == call and t.closers["tool_call"].token in t.stop_tokens
    assert t.closers["reply"].appended == (name == "glm4moe")


def test_glm_replies_are_closed_by_the_next_turns_token_appended_after_the_last():
    tok = tokenizer("glm4moe")
    conv = conversation(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "See you"))
    (example,) = ChatRenderer(tok).render(conv)
    assert example.input_ids[-1] == tok.convert_tokens_to_ids("<|user|>") and example.mask[-1]
    assert tok.apply_chat_template(conv.as_dicts(), tokenize=True, return_dict=False) == example.input_ids[:-1].tolist()


def test_template_arguments_become_the_templates_defaults():
    tok = tokenizer("qwen3")
    thinking_off = with_arguments(tok.chat_template, {"enable_thinking": False})
    msgs = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(msgs, chat_template=thinking_off, tokenize=False, add_generation_prompt=True) == (
        tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    )
    on_again = tok.apply_chat_template(
        msgs, chat_template=thinking_off, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert not on_again.endswith("</think>\n\n")  # a caller's own value still wins
    assert with_arguments(thinking_off, {}) == thinking_off
    both = with_arguments(thinking_off, {"reasoning_effort": "low"})  # defaults written before are kept, merged
    assert template_arguments(both) == {"enable_thinking": False, "reasoning_effort": "low"}
    assert with_arguments(both, {"enable_thinking": True}).count("eosguard template arguments") == 2  # one block
    with pytest.raises(TemplateArgumentError, match="template argument 'messages' cannot be set"):
        with_arguments(tok.chat_template, {"messages": []})


def test_image_templates_are_refused_by_name():
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    tok.chat_template = trl_template("smolvlm.jinja")
    with pytest.raises(TemplateError, match="drops the content of a reply"):
        ChatRenderer(tok)


@pytest.mark.slow
def test_the_docs_table_is_what_the_reader_reads():
    from pathlib import Path

    from eosguard.testing.fixtures import template_table

    page = (Path(__file__).parents[2] / "docs" / "templates.md").read_text()
    assert template_table(tokenizer) in page  # the tokenizers the tests above built, not 28 more
