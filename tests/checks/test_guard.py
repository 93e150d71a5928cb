import logging

import pytest
from transformers import DataCollatorForLanguageModeling

from eosguard.base.errors import StopTokenLossError
from eosguard.chat.render import ChatRenderer
from eosguard.checks.guard import guard
from eosguard.data.conversations import Message, conversation
from eosguard.testing.fixtures import openhermes_tokenizer
from eosguard.training.collate import PadCollator

CONV = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you"},
]


def _features(tok):
    return [tok(tok.apply_chat_template(CONV, tokenize=False)), tok(tok.apply_chat_template(CONV[:2], tokenize=False))]


def test_guard_catches_pad_equals_eos_with_transformers_collator():
    tok = openhermes_tokenizer(pad="eos")
    collator = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)
    with pytest.raises(StopTokenLossError, match=r"3 of 3 assistant turns .*pad_token_id == 32000"):
        collator(_features(tok))


@pytest.mark.parametrize("pad", ["unk", "dedicated"])
def test_guard_passes_the_known_fixes(pad):
    tok = openhermes_tokenizer(pad=pad)
    collator = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)
    collator(_features(tok))
    assert collator.totals.supervised_turns == 3 and collator.totals.stop_trained == 3


def test_warn_mode_logs_and_returns_the_batch(caplog):
    tok = openhermes_tokenizer(pad="eos")
    collator = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok, mode="warn")
    with caplog.at_level(logging.WARNING, logger="eosguard"):
        batch = collator(_features(tok))
    assert "label is -100" in caplog.text and batch["input_ids"].shape[0] == 2


def test_unsupervised_turns_and_pad_eos_positions_are_not_violations():
    tok = openhermes_tokenizer(pad="eos")  # pad id == <|im_end|> id, but eosguard pads labels by position
    r = ChatRenderer(tok)
    convs = [
        conversation(("user", "a"), Message("assistant", "skip me", train=False), ("user", "b"), ("assistant", "ok")),
        conversation(("user", "x"), ("assistant", "y")),
    ]
    collator = guard(PadCollator(pad_token_id=tok.pad_token_id, padding_side="left"), tok)
    collator([e.to_example() for e in r.examples(convs)])
    assert collator.totals.supervised_turns == 2 and collator.totals.stop_masked == 0
