"""The collator guard: wrap *any* collator and prove, batch by batch, that the stop token is trained.

    collator = eosguard.guard(DataCollatorForLanguageModeling(tokenizer, mlm=False), tokenizer)

For every row of every batch it finds the `<|im_end|>` tokens that close assistant turns (an `<|im_start|>` then
the assistant header, then content, then `<|im_end|>`) and checks that each one whose turn is supervised (any
label in the turn's content is not IGNORE_INDEX) carries its own id as label. Pads equal to `<|im_end|>` (pad ==
eos) are not assistant-closing and are ignored. On a violation it raises `StopTokenLossError` (mode "raise") or
logs a warning (mode "warn"), naming the cause and the fix.

Run as:
    python -m eosguard.guard   # shows the guard catching transformers' collator with pad == eos
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from eosguard.chatml import IGNORE_INDEX, IM_END, IM_START
from eosguard.errors import StopTokenLossError

log = logging.getLogger("eosguard")


@dataclass
class StopCheck:
    """Counts over a batch: supervised assistant turns, and how many of them have their stop token trained."""

    supervised_turns: int = 0
    stop_trained: int = 0
    unclosed_turns: int = 0  # supervised content that runs to the end of the row without a stop token
    trained_tokens: int = 0

    @property
    def stop_masked(self) -> int:
        return self.supervised_turns - self.stop_trained - self.unclosed_turns

    def __iadd__(self, other: StopCheck) -> StopCheck:
        self.supervised_turns += other.supervised_turns
        self.stop_trained += other.stop_trained
        self.unclosed_turns += other.unclosed_turns
        self.trained_tokens += other.trained_tokens
        return self


class StopTokenChecker:
    """Finds assistant-closing end-of-turn tokens in id rows and checks their labels."""

    def __init__(self, tokenizer: Any) -> None:
        self.im_start_id = tokenizer.convert_tokens_to_ids(IM_START)
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
        # The header ids as the tokenizer encodes them after <|im_start|> (no prefix space there).
        header = tokenizer(f"{IM_START}assistant\n", add_special_tokens=False)["input_ids"]
        self.header = header[1:] if header and header[0] == self.im_start_id else header
        self.pad_token_id = tokenizer.pad_token_id

    def check_row(self, ids: Sequence[int], labels: Sequence[int]) -> StopCheck:
        out = StopCheck(trained_tokens=sum(1 for y in labels if y != IGNORE_INDEX))
        n, h = len(ids), len(self.header)
        i = 0
        while i < n:
            if ids[i] == self.im_start_id and list(ids[i + 1 : i + 1 + h]) == self.header:
                start = i + 1 + h
                end = start
                while end < n and ids[end] not in (self.im_end_id, self.im_start_id):
                    end += 1
                supervised = any(y != IGNORE_INDEX for y in labels[start:end])
                if supervised:
                    out.supervised_turns += 1
                    if end >= n or ids[end] != self.im_end_id:
                        out.unclosed_turns += 1
                    elif labels[end] == self.im_end_id:
                        out.stop_trained += 1
                i = end
            else:
                i += 1
        return out

    def check_batch(self, batch: dict[str, Any]) -> StopCheck:
        ids = batch["input_ids"]
        labels = batch.get("labels")
        if labels is None:
            raise StopTokenLossError("the collator returned no 'labels': nothing would be trained")
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        labels = labels.tolist() if isinstance(labels, torch.Tensor) else labels
        total = StopCheck()
        for row_ids, row_labels in zip(ids, labels, strict=True):
            total += self.check_row(row_ids, row_labels)
        return total

    def explain(self, check: StopCheck) -> str:
        """A plain-words cause and fix for a batch whose stop tokens are not trained."""
        msg = (
            f"{check.stop_masked} of {check.supervised_turns} assistant turns in this batch end with an {IM_END} "
            "whose label is -100: the model would never learn to stop and would ramble on, writing the user's "
            "next turn itself."
        )
        if self.pad_token_id is not None and self.pad_token_id == self.im_end_id:
            msg += (
                f" Cause: the pad token is the end-of-turn token (pad_token_id == {self.im_end_id}) and the collator "
                "masks every label equal to the pad id. Fix: use a distinct pad token "
                "(eosguard.prepare_tokenizer picks one: an unused reserved token, unk, or a new <pad>) or a collator "
                "that pads labels by position (eosguard.PadCollator)."
            )
        else:
            msg += (
                " Cause: the collator or the data preparation sets the stop token's label to -100. Fix: build labels "
                "from explicit spans that include the closing end-of-turn token (eosguard.ChatMLRenderer)."
            )
        return msg


class GuardedCollator:
    """A collator wrapper that checks every `check_every`-th batch; see the module doc."""

    def __init__(
        self,
        collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
        tokenizer: Any,
        mode: Literal["raise", "warn"] = "raise",
        check_every: int = 1,
    ) -> None:
        self.collator = collator
        self.checker = StopTokenChecker(tokenizer)
        self.mode = mode
        self.check_every = max(1, check_every)
        self.batches = 0
        self.totals = StopCheck()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        self.batches += 1
        if (self.batches - 1) % self.check_every == 0:
            check = self.checker.check_batch(batch)
            self.totals += check
            if check.stop_masked > 0:
                message = self.checker.explain(check)
                if self.mode == "raise":
                    raise StopTokenLossError(message)
                log.warning("eosguard: %s", message)
        return batch

    def __getattr__(self, name: str) -> Any:  # behave like the wrapped collator (e.g. `tokenizer`, `return_tensors`)
        return getattr(self.collator, name)


def guard(
    collator: Callable, tokenizer: Any, mode: Literal["raise", "warn"] = "raise", check_every: int = 1
) -> GuardedCollator:
    """Wrap `collator` so that a batch that would not train the end-of-turn token is caught.

    Example:
        >>> from transformers import DataCollatorForLanguageModeling
        >>> from eosguard.tokenizer_setup import openhermes_tokenizer
        >>> tok = openhermes_tokenizer(pad="eos")
        >>> c = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)
        >>> msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
        >>> text = tok.apply_chat_template(msgs, tokenize=False)
        >>> c([tok(text)])
        Traceback (most recent call last):
        ...
        eosguard.errors.StopTokenLossError: 1 of 1 assistant turns in this batch end with an <|im_end|> ...
    """
    return GuardedCollator(collator, tokenizer, mode=mode, check_every=check_every)


if __name__ == "__main__":
    from transformers import DataCollatorForLanguageModeling

    from eosguard.tokenizer_setup import openhermes_tokenizer

    tok = openhermes_tokenizer(pad="eos")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], tokenize=False
    )
    try:
        guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)([tok(text)])
    except StopTokenLossError as exc:
        print(exc)
