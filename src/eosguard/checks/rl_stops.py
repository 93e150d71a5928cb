"""Online RL and the stop token: the ids TRL's `GRPOTrainer` and `RLOOTrainer` finish a completion on, held to the
chat template's closers, and generated completions read the way TRL judged them.

What TRL 1.16 does (read in trl/trainer/grpo_trainer.py and rloo_trainer.py, the same code in both):

- its stop set, `trainer.eos_token_ids`, is the model's `generation_config.eos_token_id` (an int or a list) with the
  tokenizer's eos put in front where it is missing (trl#7039); the chat template is never read. `generate()` runs with
  that set as its eos, each completion is cut after its first id of the set, and a completion whose last token is none
  of them (nor the pad) counts as truncated (`completions/clipped_ratio`; with `mask_truncated_completions`, off by
  default, it is dropped from the loss). With vLLM, TRL passes no stop ids: vLLM stops on what the model folder's files
  say. A base model given a chat template (Qwen2.5 base: eos `<|endoftext|>`, ChatML replies closed by `<|im_end|>`)
  never finishes on `<|im_end|>`: every completion runs on to `max_completion_length`, the reward scores text past
  the reply's end, and the saved model runs on when served (open-r1#663);
- a finished completion's `completion_mask` covers it up to and including its stop token, so the stop token is in
  the loss;
- a tokenizer with no pad gets pad = eos, and the model's config and generation config get that pad id (saved with
  the model: a later SFT stage whose collator masks pad labels masks the stop token, the seed's bug).

Run as:
    guard_trainer(GRPOTrainer(...)).train()   # eosguard.integrations: the stop set checked at the first step
    eosguard doctor --tokenizer PATH --model PATH   # the model step states the stop set GRPO / RLOO use
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eosguard.chat.templates import KIND_NAMES, ChatTemplate


def rl_stop_ids(generation_eos: int | Sequence[int] | None, tokenizer_eos: int | None) -> list[int]:
    """The ids TRL's GRPOTrainer / RLOOTrainer finish a completion on: the generation config's eos ids, with the
    tokenizer's eos in front where missing (TRL 1.16, `GRPOTrainer.__init__`).

    Example:
        >>> rl_stop_ids(151643, 151643)        # Qwen2.5 base: <|endoftext|> alone
        [151643]
        >>> rl_stop_ids([151643], 151645)      # a tokenizer whose eos is <|im_end|>
        [151645, 151643]
        >>> rl_stop_ids(None, 2)
        [2]
    """
    ids = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
    return ids if tokenizer_eos is None or tokenizer_eos in ids else [tokenizer_eos, *ids]


def missing_closers(chat: ChatTemplate, ids: Collection[int]) -> list[str]:
    """The template's stop tokens that `ids` miss, each with the kinds of reply it closes, e.g.
    `<|im_end|> (id 2; final answers and tool calls)`; empty when every reply can finish."""
    kinds: dict[int, list[str]] = {}
    for kind, closer in chat.closers.items():
        if closer.id not in ids:
            kinds.setdefault(closer.id, []).append(KIND_NAMES[kind])
    names = {c.id: c.token for c in chat.closers.values()}
    return [f"{names[i]} (id {i}; {' and '.join(k)})" for i, k in kinds.items()]


def fixed_stop_ids(chat: ChatTemplate, generation_eos: Sequence[int]) -> list[int]:
    """The generation config's eos ids with every stop token of the template added (what `eosguard fix` writes)."""
    return list(dict.fromkeys([*generation_eos, *chat.stop_ids]))


def doctor_note(chat: ChatTemplate, generation_eos: Sequence[int], tok: Any) -> str:
    """What the engines that add the tokenizer's eos to the generation config's ids make of a generation config that
    misses a stop token of the template (the tail of the doctor's `generation-eos-mismatch` message): vLLM (its
    engine's eos is the tokenizer's) and TRL's GRPO / RLOO stop on both, which may close the gap."""
    ids = rl_stop_ids(list(generation_eos), tok.eos_token_id)
    missing = missing_closers(chat, ids)
    both = f"vLLM and TRL's GRPOTrainer / RLOOTrainer stop on {ids} (these and the tokenizer's eos {tok.eos_token})"
    if missing:
        return (
            f"; {both}, which miss {', '.join(missing)} too: vLLM runs on past it, and online RL counts every reply "
            "closed by it as unfinished, generates past it to max_completion_length and scores and trains what follows"
        )
    return (
        f"; {both}, so they stop where they should (and transformers' Trainer.train() adds the tokenizer's eos to "
        "the generation config it saves), but generate() on this folder as it stands does not"
    )


@dataclass
class CompletionCheck:
    """Generated completions read the way TRL judged them: how many, how many never finished (TRL's truncated), how
    many hold a stop token of the template that TRL did not end them on, and how many finished ones have their stop
    token masked out of the loss."""

    completions: int = 0
    unfinished: int = 0
    past_closer: int = 0
    stop_masked: int = 0

    @property
    def finished(self) -> int:
        return self.completions - self.unfinished

    def __iadd__(self, other: CompletionCheck) -> CompletionCheck:
        for name in ("completions", "unfinished", "past_closer", "stop_masked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def line(self) -> str:
        """One line for the log (see `check_completions`)."""
        share = f" ({self.unfinished / self.completions:.0%})" if self.completions else ""
        return (
            f"{self.completions} completions: {self.unfinished} never finished{share}, {self.past_closer} ran past a "
            f"stop token of the template, {self.finished - self.stop_masked}/{self.finished} finished ones keep their "
            "stop token in the loss"
        )


def check_completions(
    batch: dict[str, Any], eos_ids: Collection[int], pad_id: int | None, closer_ids: Collection[int]
) -> CompletionCheck:
    """Read TRL's padded `completion_ids` / `completion_mask` (and `tool_mask`, where tools answered) as TRL did.

    A row's completion is its masked-in tokens, or, for a row TRL masked whole (`mask_truncated_completions`), its
    tokens up to the right padding; it finished where its last token is an eos id or the pad (TRL's own rule, the one
    `completions/clipped_ratio` counts). A stop token of the template counts as run past unless it ends a finished
    completion or a tool's answer follows it; a completion that finished on an eos id must keep it in the loss
    (`completion_mask` times `tool_mask`).

    Example:
        >>> ids = torch.tensor([[5, 9, 2, 0], [5, 7, 6, 4], [5, 9, 0, 0]])   # eos 2 and 9 (the closer), pad 0
        >>> mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
        >>> c = check_completions({"completion_ids": ids, "completion_mask": mask}, [2, 9], 0, [9])
        >>> c.unfinished, c.past_closer, c.stop_masked     # row 0 ended on 2, past its closer 9
        (1, 1, 0)
        >>> c.line()[:40]
        '3 completions: 1 never finished (33%), 1'
    """
    ids, mask = batch["completion_ids"].tolist(), batch["completion_mask"].tolist()
    tools = batch.get("tool_mask")
    tools = tools.tolist() if isinstance(tools, torch.Tensor) else None
    ends = {*eos_ids, *([] if pad_id is None else [pad_id])}
    out = CompletionCheck(completions=len(ids))
    for r, (row, m) in enumerate(zip(ids, mask, strict=True)):
        n = sum(m) if any(m) else _unpadded_length(row, pad_id)
        finished = n > 0 and row[n - 1] in ends
        out.unfinished += not finished
        if finished and row[n - 1] in eos_ids:
            out.stop_masked += not (m[n - 1] and (tools is None or tools[r][n - 1]))
        answered = {i for i in range(n - 1) if tools is not None and not tools[r][i + 1]}  # a tool's answer follows
        out.past_closer += any(
            row[i] in closer_ids and not (finished and i == n - 1) and i not in answered for i in range(n)
        )
    return out


def _unpadded_length(row: Sequence[int], pad_id: int | None) -> int:
    n = len(row)
    while n and pad_id is not None and row[n - 1] == pad_id:
        n -= 1
    return n


__all__ = ["CompletionCheck", "check_completions", "doctor_note", "fixed_stop_ids", "missing_closers", "rl_stop_ids"]
