"""TRL's online RL stop set held to the template, and completions read the way TRL judged them."""

import torch

from eosguard.chat.templates import template_for
from eosguard.checks.rl_stops import check_completions, fixed_stop_ids, missing_closers, rl_stop_ids
from eosguard.testing.fixtures import family_tokenizer


def test_every_kind_of_reply_is_held_to_the_stop_set():
    """gpt-oss closes final answers with <|return|> and tool calls with <|call|>: a stop set of <|return|> alone
    (the tokenizer's eos, as GRPO adds it) never finishes a tool call."""
    tok = family_tokenizer("gpt-oss")
    chat = template_for(tok)
    ret, call = tok.convert_tokens_to_ids(["<|return|>", "<|call|>"])
    assert tok.eos_token_id == ret
    assert missing_closers(chat, rl_stop_ids(None, ret)) == [f"<|call|> (id {call}; tool calls)"]
    assert missing_closers(chat, rl_stop_ids([call], ret)) == []
    assert missing_closers(chat, [ret, call]) == [] and fixed_stop_ids(chat, [ret]) == [ret, call]


# eos 2, the template's closer 9, pad 0; rows: closed by 9 / cut by TRL (mask_truncated_completions zeroes it) /
# a tool call closed by 9 and answered (tool_mask 0), then closed by 9 / closed by 9 but a mask drops it from the loss
BATCH = {
    "completion_ids": torch.tensor([[5, 9, 0, 0], [5, 6, 7, 8], [5, 9, 4, 9], [5, 9, 0, 0]]),
    "completion_mask": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]),
    "tool_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1], [1, 0, 1, 1]]),
}


def test_completions_as_trl_judged_them():
    check = check_completions(BATCH, [2, 9], 0, [9])
    assert (check.completions, check.unfinished, check.past_closer, check.stop_masked) == (4, 1, 0, 1)
    assert check.line().endswith("2/3 finished ones keep their stop token in the loss")
    # The closer missing from the stop set: every row that holds it runs past it, none finishes.
    check = check_completions(BATCH, [2], 0, [9])
    assert (check.unfinished, check.past_closer, check.stop_masked) == (4, 3, 0)
    assert check.line().startswith("4 completions: 4 never finished (100%), 3 ran past a stop token")
