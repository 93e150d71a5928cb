"""Measure whether a model stops: stop rate, runaway rate, role leaks, lengths and exact match.

For each held-out conversation the prompt is everything before its last assistant turn, rendered by the same
`ChatRenderer` as training, with the tokenizer's own chat template and its generation prompt. Generation is
batched, with prompts padded on the left by a pad token distinct from the end-of-turn token, and stops at the
template's end-of-turn token (read off the template: `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, ...):

- stop rate: share of generations that emit the end-of-turn token within `max_new_tokens`;
- runaway rate: share that use the whole budget without it;
- role-leak rate: share that write a control token of the template themselves (a turn header such as
  `<|im_start|>` or `<|start_header_id|>`: the model writing the next turn);
- exact match: the text before the stop token equals the reference answer (whitespace-trimmed).

Run as:
    eosguard eval --model DIR --data heldout.jsonl [--max-new-tokens 64] [--json]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from eosguard.collate import pad_sequences
from eosguard.conversations import Conversation
from eosguard.render import ChatRenderer


@dataclass
class Generation:
    prompt: str
    reference: str | None
    output: str
    stopped: bool
    new_tokens: int
    role_leak: bool

    @property
    def exact(self) -> bool:
        return self.reference is not None and self.stopped and self.output.strip() == self.reference.strip()


@dataclass
class StopReport:
    """Aggregate figures over `n` generations (rates in [0, 1])."""

    n: int
    stop_rate: float
    runaway_rate: float
    role_leak_rate: float
    exact_match: float | None
    mean_new_tokens: float
    p95_new_tokens: float
    seconds: float
    generations: list[Generation] = field(default_factory=list, repr=False)

    def to_dict(self, with_generations: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "generations"}
        if with_generations:
            d["generations"] = [asdict(g) for g in self.generations]
        return d


def split_prompt(conv: Conversation) -> tuple[list, str | None]:
    """Prompt messages (everything before the last assistant turn) and that turn's reference answer."""
    msgs = list(conv.messages)
    if msgs and msgs[-1].role == "assistant":
        return msgs[:-1], msgs[-1].content
    return msgs, None


def _percentile(values: Sequence[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return float(s[k])


@torch.no_grad()
def generate_batch(
    model: Any,
    renderer: ChatRenderer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[list[int]]:
    """Generate for prompts padded on the left; returns the new tokens of each (up to and incl. the stop token)."""
    width = max(len(p) for p in prompts)
    input_ids = pad_sequences(prompts, pad_id, width, "left").to(model.device)
    attention = pad_sequences([[1] * len(p) for p in prompts], 0, width, "left").to(model.device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=None,
        top_k=None,
        eos_token_id=renderer.end_of_turn_id,
        pad_token_id=pad_id,
    )
    new = out[:, width:].tolist()
    result = []
    for row in new:
        eot = renderer.end_of_turn_id
        cut = row.index(eot) + 1 if eot in row else len(row)
        result.append(row[:cut])
    return result


def evaluate_stopping(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    renderer: ChatRenderer | None = None,
    advance: Callable[[int], None] | None = None,
) -> StopReport:
    """Generate an answer for every conversation's last turn and measure how the model stops; `advance(n)` is
    called after each batch of n prompts (`eosguard.progress`).

    Example:
        >>> # report = evaluate_stopping(model, tokenizer, heldout); report.stop_rate
    """
    renderer = renderer or ChatRenderer(tokenizer)
    eot = renderer.end_of_turn_id
    leak_ids = renderer.template.control_ids - {eot, tokenizer.pad_token_id}
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id == eot:
        # A pad equal to the stop token would make padded prompts look like finished turns; use unk or 0 instead.
        pad_id = tokenizer.unk_token_id if tokenizer.unk_token_id not in (None, eot) else 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    gens: list[Generation] = []
    # Sort by prompt length so batches pad little; results go back in input order.
    order = sorted(range(len(conversations)), key=lambda i: len(conversations[i].messages[-2].content))
    slots: dict[int, Generation] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        parts = [split_prompt(conversations[i]) for i in idx]
        prompts = [renderer.prompt_ids(p) for p, _ in parts]
        outputs = generate_batch(
            model,
            renderer,
            prompts,
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            do_sample=do_sample,
            temperature=temperature,
        )
        for i, (msgs, ref), new in zip(idx, parts, outputs, strict=True):
            stopped = bool(new) and new[-1] == eot
            body = new[:-1] if stopped else new
            text = tokenizer.decode(body, skip_special_tokens=False)
            leak = any(t in leak_ids for t in body)
            slots[i] = Generation(
                prompt=msgs[-1].content,
                reference=ref,
                output=text,
                stopped=stopped,
                new_tokens=len(new),
                role_leak=leak,
            )
        if advance is not None:
            advance(len(idx))
    gens = [slots[i] for i in range(len(conversations))]
    if was_training:
        model.train()
    n = len(gens)
    refs = [g for g in gens if g.reference is not None]
    lengths = [g.new_tokens for g in gens]
    return StopReport(
        n=n,
        stop_rate=sum(g.stopped for g in gens) / n if n else 0.0,
        runaway_rate=sum(not g.stopped for g in gens) / n if n else 0.0,
        role_leak_rate=sum(g.role_leak for g in gens) / n if n else 0.0,
        exact_match=(sum(g.exact for g in refs) / len(refs)) if refs else None,
        mean_new_tokens=sum(lengths) / n if n else 0.0,
        p95_new_tokens=_percentile(lengths, 0.95),
        seconds=time.perf_counter() - start,
        generations=gens,
    )


__all__ = ["Generation", "StopReport", "evaluate_stopping", "generate_batch", "split_prompt"]
