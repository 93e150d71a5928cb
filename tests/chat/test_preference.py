"""Preference rows from the one renderer, on real templates: each completion holds its closing sequence exactly once
(at its end, nothing after it), the prompt is the generation prompt's own ids (a token prefix of prompt + completion,
split as SFT splits), the pair's prompts agree; plain text closed exactly once; over-length never cuts a closer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eosguard.base.errors import DataError
from eosguard.chat.preference import (
    PreferenceStats,
    earlier_turns_dropped,
    fit_preference,
    fit_preferences,
    render_preferences,
)
from eosguard.chat.render import ChatRenderer
from eosguard.data.preferences import parse_preference
from eosguard.testing.fixtures import demo_tokenizer, family_tokenizer

PAIRS = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": " Five, I think.\n"}],
    },
    {
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."},
        ],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "I would rather not."}],
    },
    {  # TRL's implicit prompt: the messages both sides share
        "chosen": [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
        "rejected": [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "No."}],
    },
]
THINKING = {  # a reply with its reasoning, and one without (the prompt opens a block it does not fill)
    "prompt": [{"role": "user", "content": "What is 3 * 3?"}],
    "chosen": [{"role": "assistant", "content": "9", "reasoning_content": "3 times 3 is 9."}],
    "rejected": [{"role": "assistant", "content": "6"}],
}


@pytest.mark.parametrize("family", ["smollm2", "llama3", "gemma", "qwen3", "gpt-oss"])
def test_each_completion_is_closed_once_after_the_generation_prompt(family):
    tok = family_tokenizer(family)
    renderer = ChatRenderer(tok)
    chat = renderer.template
    records = [parse_preference(p) for p in PAIRS + ([THINKING] if chat.supports.reasoning else [])]
    stats = PreferenceStats()
    rows = render_preferences(renderer, records, stats)
    closer = [tok.convert_tokens_to_ids(t) for t in chat.closers["reply"].sequence]
    stops = set(chat.stop_ids)
    for record, row in zip(records, rows, strict=True):
        # The prompt is what inference sends: the generation prompt's own ids.
        assert row.prompt_ids.tolist() == renderer.prompt_ids(record.prompt), family
        for completion in row.completions:
            ids = completion.tolist()
            assert ids[-len(closer) :] == closer, (family, tok.decode(ids))
            # The closing sequence exactly once: no stop token before the end (a reasoning block's `<|end|>` in
            # gpt-oss is not one of its stop tokens), nothing after it.
            assert not stops & set(ids[: -len(closer)]), (family, tok.decode(ids))
    if chat.supports.reasoning:  # the reasoning is written by the model: inside the completion, trained
        assert "3 times 3 is 9." in tok.decode(rows[-1].completions[0])
        assert "3 times 3" not in tok.decode(rows[-1].prompt_ids)


def test_plain_text_completions_are_closed_exactly_once_and_counted():
    tok = demo_tokenizer()  # ChatML: <|im_end|>; eos <|im_end|> after eosguard's setup, so TRL appends it
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    cases = {
        "Hello": "added",
        "Hello<|im_end|>\n": "kept",
        "Hello<|im_end|>\n<|im_end|>": "doubled",  # TRL appended its eos to templated text
        "Hello<|im_end|><|im_end|>\n": "doubled",
    }
    records = [parse_preference({"prompt": prompt, "chosen": c, "rejected": "No"}) for c in cases]
    stats = PreferenceStats()
    rows = render_preferences(ChatRenderer(tok), records, stats)
    for row in rows:
        assert tok.decode(row.completions[0]) == "Hello<|im_end|>"
        assert tok.decode(row.prompt_ids) == prompt
    assert (stats.closer_added, stats.closer_kept, stats.closer_doubled) == (1 + len(cases), 1, 2)


def test_over_length_drops_whole_earlier_turns_never_a_completion():
    tok = demo_tokenizer()
    renderer = ChatRenderer(tok)
    record = parse_preference(PAIRS[1])  # two user turns: the first exchange can go
    (row,) = render_preferences(renderer, [record])
    (last,) = render_preferences(renderer, [earlier_turns_dropped(record)])
    longest = max(len(c) for c in row.completions)
    stats = PreferenceStats()
    (kept,) = fit_preferences([record], renderer, stats, max_length=len(last.prompt_ids) + longest)
    assert kept.truncated and kept.prompt_ids.tolist() == last.prompt_ids.tolist()
    assert "Hello! How can I help?" not in tok.decode(kept.prompt_ids)  # the first exchange, whole, and no more
    assert all(np.array_equal(a, b) for a, b in zip(kept.completions, row.completions, strict=True))
    assert (stats.records, stats.rows, stats.truncated) == (1, 1, 1)
    # No turn left to drop: the pair goes, counted; `drop` drops it at once; `error` names it.
    too_short = len(last.prompt_ids) + longest - 1
    assert not list(fit_preferences([record], renderer, stats, max_length=too_short))
    assert not list(fit_preferences([record], renderer, stats, max_length=len(row.prompt_ids), over_length="drop"))
    assert stats.dropped_too_long == 2
    with pytest.raises(DataError, match="longer than max_length"):
        fit_preference(row, too_short, "error")
    assert fit_preference(row, 10_000, "error") is row


@pytest.mark.parametrize(
    "record, words",
    [
        ({"prompt": "Hi", "chosen": "a"}, "needs rejected"),
        ({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b"}, "mixes text and message"),
        (
            {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "a"}]},
            "needs label",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "completion": [{"role": "assistant", "content": "a"}],
                "label": 1,
            },
            "'label' must be true or false",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
                "rejected": [{"role": "assistant", "content": "c"}],
            },
            "one assistant message",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "c"}],
            },
            "ends with an assistant turn",
        ),
        ({"prompt": "Hi", "chosen": "a", "rejected": "b", "chat_template_kwargs": {}}, "--template-arg"),
    ],
)
def test_a_bad_preference_record_names_its_file_and_line(record, words, tmp_path):
    from typer.testing import CliRunner

    from eosguard.cli.app import app

    good = {"prompt": "Hi", "chosen": "a", "rejected": "b"}
    if "completion" in record or "label" in record:
        good = {"prompt": "Hi", "completion": "a", "label": True}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        parse_preference(record)
    tokenizer = tmp_path / "tok"
    demo_tokenizer().save_pretrained(tokenizer)
    result = CliRunner().invoke(
        app, ["prepare", str(path), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and f"{path}:2:" in result.output and "Traceback" not in result.output
