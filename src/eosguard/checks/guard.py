"""The collator guard: wrap *any* collator and prove, batch by batch, that the stop token is trained.

    collator = eosguard.checks.guard(DataCollatorForLanguageModeling(tokenizer, mlm=False), tokenizer)

It works on any chat template: the assistant header and the stop tokens are read off the tokenizer's own template
(`eosguard.chat.templates.ChatTemplate`), e.g. `<|start_header_id|>assistant<|end_header_id|>` and `<|eot_id|>` for
Llama-3, `[/INST]` and `</s>` for Mistral, `<|return|>` and a tool call's `<|call|>` for gpt-oss. For every row of
every batch it finds each assistant reply (the header, then everything up to the first stop token: reasoning, text,
tool calls) and checks that a reply whose content is supervised (any label not IGNORE_INDEX) is closed by its stop
token with every token of its closing sequence carrying its own id as label. Pads equal to a stop token (pad ==
eos) follow no header and are ignored.

On a violation it raises `StopTokenLossError` (mode "raise") or logs a warning (mode "warn"), naming the cause and
the fix. A batch in which it finds no assistant reply at all, or no trained token, is never a pass: it raises (or
warns loudly), because a guard that checked nothing must not look like one that checked and found all well.

Run as:
    eosguard train CONFIG.yaml   # every batch guarded (exit 3 when one would not train the stop token)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from eosguard.base.errors import StopTokenLossError
from eosguard.chat.render import IGNORE_INDEX
from eosguard.chat.templates import ChatTemplate, template_for

log = logging.getLogger("eosguard")


@dataclass
class StopCheck:
    """Counts over rows: assistant replies found, supervised ones, and how many of those have a trained stop token."""

    assistant_turns: int = 0
    supervised_turns: int = 0
    stop_trained: int = 0
    unclosed_turns: int = 0  # supervised content that runs to the end of the row without a stop token
    trained_tokens: int = 0

    @property
    def stop_masked(self) -> int:
        return self.supervised_turns - self.stop_trained - self.unclosed_turns

    def __iadd__(self, other: StopCheck) -> StopCheck:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class StopTokenChecker:
    """Finds assistant replies and their closing tokens in id rows, and checks their labels.

    A reply starts after the template's assistant header and ends at the first stop token of the template (a final
    answer's, a tool call's) or where a user turn's header begins (then it is unclosed). Closed, it must carry a
    label on every token of its closing sequence (`<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`, `</tool_call><|im_end|>`).
    """

    def __init__(self, tokenizer: Any, template: ChatTemplate | None = None) -> None:
        self.template = template or template_for(tokenizer)
        self.end_of_turn, self.end_of_turn_id = self.template.require_end_of_turn()
        self.header = self.template.assistant_header_ids
        self.user_header = self.template.user_header_ids
        self.stop_ids = frozenset(self.template.stop_ids)
        self.sequences: dict[int, list[list[int]]] = {}
        for closer in self.template.closers.values():
            seq = [int(self.template.tokenizer.convert_tokens_to_ids(t)) for t in closer.sequence]
            self.sequences.setdefault(closer.id, []).append(seq)
        for seqs in self.sequences.values():
            seqs.sort(key=len, reverse=True)
        self.pad_token_id = tokenizer.pad_token_id

    def replies(self, ids: Sequence[int]) -> Iterator[tuple[int, int]]:
        """(start, end) of each assistant reply in a row: content from `start`; `end` is the stop token that closes
        it, or the start of the next user turn or len(ids) when the row goes on or ends first (unclosed)."""
        n, h = len(ids), len(self.header)
        if not h:
            return
        first, u = self.header[0], len(self.user_header)
        i = 0
        while i < n:
            if ids[i] == first and list(ids[i : i + h]) == self.header:
                start = end = i + h
                while end < n and ids[end] not in self.stop_ids:
                    if u and ids[end] == self.user_header[0] and list(ids[end : end + u]) == self.user_header:
                        break
                    end += 1
                yield start, end
                i = max(end, i + 1)
            else:
                i += 1

    def closing(self, ids: Sequence[int], start: int, end: int) -> list[int]:
        """Positions of the closing sequence that ends at the stop token `end` (the longest the template writes)."""
        for seq in self.sequences.get(int(ids[end]), []):
            k = len(seq)
            if end - k + 1 >= start and list(ids[end - k + 1 : end + 1]) == seq:
                return list(range(end - k + 1, end + 1))
        return [end]

    def reply_stops(self, ids: Sequence[int]) -> list[int]:
        """Positions of the stop tokens that close an assistant reply (the ones that must be trained)."""
        return [end for _, end in self.replies(ids) if end < len(ids) and ids[end] in self.stop_ids]

    def check_row(self, ids: Sequence[int], labels: Sequence[int]) -> StopCheck:
        out = StopCheck(trained_tokens=sum(1 for y in labels if y != IGNORE_INDEX))
        for start, end in self.replies(ids):
            out.assistant_turns += 1
            if any(y != IGNORE_INDEX for y in labels[start:end]):
                out.supervised_turns += 1
                if end >= len(ids) or ids[end] not in self.stop_ids:
                    out.unclosed_turns += 1
                elif all(labels[p] == ids[p] for p in self.closing(ids, start, end)):
                    out.stop_trained += 1
        return out

    def check_batch(self, batch: dict[str, Any]) -> StopCheck:
        """Count one collated batch. Labels are the batch's `labels`, or, for a preference collator (TRL's
        `completion_mask`, no labels), the ids where the mask is 1: the tokens TRL's loss trains."""
        ids = batch["input_ids"]
        labels = batch.get("labels")
        if labels is None and batch.get("completion_mask") is not None:
            mask = torch.as_tensor(batch["completion_mask"]).bool()
            labels = torch.as_tensor(ids).masked_fill(~mask, IGNORE_INDEX)
        if labels is None:
            raise StopTokenLossError("the collator returned no 'labels': nothing would be trained")
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        labels = labels.tolist() if isinstance(labels, torch.Tensor) else labels
        total = StopCheck()
        for row_ids, row_labels in zip(ids, labels, strict=True):
            total += self.check_row(row_ids, row_labels)
        return total

    def problem(self, check: StopCheck, *, completions: bool = False) -> str | None:
        """Why this batch would not teach the model to stop, in plain words with the fix; None when it would.
        completions: a preference batch (one completion a row), where a completion that runs to the end of its row
        without its closing sequence was cut (TRL's collator truncates at `max_length`)."""
        if check.assistant_turns == 0:
            header = "".join(self.template.tokenizer.convert_ids_to_tokens(self.header))
            return (
                f"found no assistant reply in this batch (no {header!r} header): the guard cannot prove that "
                f"{self.end_of_turn} is trained. Is the data rendered with this tokenizer's chat template?"
            )
        if check.trained_tokens == 0:
            return "no token of this batch is trained (every label is -100): the loss is undefined"
        if check.supervised_turns == 0:
            return "tokens are trained but no assistant reply is: the model would not learn to answer or to stop"
        stops = "/".join(self.template.stop_tokens)
        if completions and check.unclosed_turns:
            return (
                f"{check.unclosed_turns} of {check.supervised_turns} completions in this batch end without their "
                f"{stops}: cut at max_length (TRL's collator keeps the start of prompt + completion), they teach the "
                "model to run on. Fix: a max_length that holds every prompt and completion (eosguard's preference "
                "rows fit it, dropping whole earlier turns of a prompt), or truncation_mode='keep_end'."
            )
        if check.stop_masked == 0:
            return None
        msg = (
            f"{check.stop_masked} of {check.supervised_turns} assistant turns in this batch end with an "
            f"{stops} whose label is -100 (it, or another token of its closing sequence): the model would never learn "
            "to stop and would ramble on, writing the user's next turn itself."
        )
        if self.pad_token_id is not None and self.pad_token_id in self.stop_ids:
            msg += (
                f" Cause: the pad token is a stop token of the template (pad_token_id == {self.pad_token_id}) and the "
                "collator masks every label equal to the pad id. Fix: use a distinct pad token "
                "(eosguard.prepare_tokenizer picks one: an unused reserved token, unk, or a new <pad>) or a collator "
                "that pads labels by position (eosguard.PadCollator)."
            )
        else:
            msg += (
                " Cause: the collator or the data preparation sets the stop token's label to -100. Fix: build labels "
                "from explicit spans that include the closing end-of-turn token (eosguard.ChatRenderer)."
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
        template: ChatTemplate | None = None,
    ) -> None:
        self.collator = collator
        self.checker = StopTokenChecker(tokenizer, template)
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
            message = self.checker.problem(check, completions="labels" not in batch and "completion_mask" in batch)
            if message is not None:
                if self.mode == "raise":
                    raise StopTokenLossError(message)
                log.warning("eosguard: !!! %s", message)
        return batch

    def __getattr__(self, name: str) -> Any:  # behave like the wrapped collator (e.g. `tokenizer`, `return_tensors`)
        return getattr(self.collator, name)


def guard(
    collator: Callable,
    tokenizer: Any,
    mode: Literal["raise", "warn"] = "raise",
    check_every: int = 1,
    template: ChatTemplate | None = None,
) -> GuardedCollator:
    """Wrap `collator` so that a batch that would not train the end-of-turn token is caught (`template`: the
    tokenizer's, read already). A preference collator's batches (TRL's `completion_mask`) are checked as TRL's loss
    reads them: every completion, chosen and rejected, closed by its trained closing sequence.

    Example:
        >>> from transformers import DataCollatorForLanguageModeling
        >>> from eosguard.testing.fixtures import family_tokenizer
        >>> tok = family_tokenizer("llama3", pad="eot")          # pad = <|eot_id|>, as in unsloth#416
        >>> c = guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)
        >>> msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
        >>> c([tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)])
        Traceback (most recent call last):
        ...
        eosguard.base.errors.StopTokenLossError: 1 of 1 assistant turns in this batch end with an <|eot_id|> ...
    """
    return GuardedCollator(collator, tokenizer, mode=mode, check_every=check_every, template=template)
