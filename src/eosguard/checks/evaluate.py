"""Measure whether a model stops: stop rate, runaway rate, role leaks, lengths and exact match.

For each held-out conversation the prompt is everything before its last assistant turn, rendered by the same
`ChatRenderer` as training, with the tokenizer's own chat template, its arguments, the conversation's tools and its
generation prompt. Generation is batched, with prompts padded on the left by a pad token distinct from every stop
token, and stops at any stop token of the template (read off the template: `<|im_end|>`, `<|eot_id|>`,
`<end_of_turn>`, gpt-oss's `<|return|>` and `<|call|>`, ...):

- stop rate: share of generations that emit a stop token within `max_new_tokens`;
- runaway rate: share that use the whole budget without one;
- role-leak rate: share that write, themselves, a control token no reply of the template contains (a turn header
  such as `<|im_start|>`, a tool result's `<tool_response>`) or the header of a user turn: the model writing the
  next turn (`RoleLeaks`, the one check for ids and for text a server returned, with or without its control
  tokens);
- exact match: the tokens before the stop token decode to what the reference reply trains (its reasoning, text or
  tool call as the template writes it; whitespace-trimmed).

The same figures are given per kind of reference reply: final answers and tool calls (a tool call that runs on
past its closing token is a runaway: the agent never gets the tool's answer).

Run as:
    eosguard eval --model DIR --data heldout.jsonl [--max-new-tokens 64] [--json]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from eosguard.chat.render import ChatRenderer
from eosguard.chat.settings import MAX_NEW_TOKENS
from eosguard.data.conversations import Conversation, Message
from eosguard.training.collate import pad_sequences


class RoleLeaks:
    """Whether a model wrote another turn itself: a control token no reply of the template contains (a turn header's
    `<|im_start|>`, a tool result's `<tool_response>`; the pad excepted) or the header of a user turn.

    `in_ids` judges generated ids (transformers); `in_answer` what a server returned: the generated tokens where it
    lists them (OpenAI's `logprobs`: llama.cpp's server gives their ids, vLLM their text, control tokens included),
    the same check; else its text: with its control tokens (vLLM asked `skip_special_tokens: false`) tokenized and
    judged as ids, without them (stripped) by the text the turn headers leave (`ChatTemplate.stripped_headers`:
    ChatML's `\\nuser\\n`), None when that text cannot tell (a template whose roles are control tokens alone).

    Example:
        >>> from eosguard.testing.fixtures import demo_tokenizer
        >>> from eosguard.chat.templates import ChatTemplate
        >>> tok = demo_tokenizer()
        >>> leaks = RoleLeaks(tok, ChatTemplate(tok))
        >>> leaks.in_text("4<|im_end|>\\n<|im_start|>user\\nAnd 5?"), leaks.in_text("4\\nuser\\nAnd 5?")
        (True, True)
        >>> leaks.in_text("4")
        False
    """

    def __init__(self, tokenizer: Any, template: Any) -> None:
        self.tokenizer = tokenizer
        self.leak_ids = template.leak_ids - {tokenizer.pad_token_id}
        self.user_header = list(template.user_header_ids)
        self.control_texts = tuple(template.markers.control_tokens)
        self.stripped = template.stripped_headers

    def in_ids(self, ids: Sequence[int]) -> bool:
        return any(t in self.leak_ids for t in ids) or _contains(ids, self.user_header)

    def in_answer(self, text: str, tokens: Sequence[dict[str, Any]] | None = None) -> bool | None:
        """A chat completion's answer: its text, and its `logprobs.content` (one entry a generated token) if any."""
        if tokens and all(isinstance(t.get("id"), int) for t in tokens):
            return self.in_ids([t["id"] for t in tokens])
        if tokens and all(isinstance(t.get("token"), str) for t in tokens):
            text = "".join(t["token"] for t in tokens)
        return self.in_text(text)

    def in_text(self, text: str) -> bool | None:
        if any(t in text for t in self.control_texts):  # the server kept the control tokens: judge the ids
            return self.in_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not self.stripped:  # none in the text, and the headers leave nothing to recognise when stripped
            return None
        return any(h in "\n" + text for h in self.stripped)


@dataclass
class Generation:
    """One held-out prompt: its last user (or tool) message, the reference reply as the template trains it, what
    the model wrote (without the stop token), and how it ended. kind: "reply" or "tool_call" (the reference's);
    role_leak None: not measurable (see `RoleLeaks`)."""

    prompt: str
    reference: str | None
    output: str
    stopped: bool
    new_tokens: int
    role_leak: bool | None
    kind: str = "reply"

    @property
    def exact(self) -> bool:
        return self.reference is not None and self.stopped and self.output.strip() == self.reference.strip()


@dataclass
class StopReport:
    """Aggregate figures over `n` generations (rates in [0, 1])."""

    n: int
    stop_rate: float
    runaway_rate: float
    role_leak_rate: float | None
    exact_match: float | None
    mean_new_tokens: float
    p95_new_tokens: float
    seconds: float
    generations: list[Generation] = field(default_factory=list, repr=False)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    engine: str = "transformers"

    @classmethod
    def of(cls, gens: list[Generation], seconds: float) -> StopReport:
        """The figures over all generations, and per kind of reply (final answers, tool calls) where there are two."""
        kinds = sorted({g.kind for g in gens})
        by_kind = {k: figures([g for g in gens if g.kind == k]) for k in kinds} if len(kinds) > 1 else {}
        return cls(**figures(gens), seconds=seconds, generations=gens, by_kind=by_kind)

    def by(self, groups: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The same figures per group, `groups[i]` naming generation i's (a task, a source file), in first-seen
        order."""
        if len(groups) != len(self.generations):
            raise ValueError(f"{len(groups)} group names for {len(self.generations)} generations")
        names = list(dict.fromkeys(groups))
        return {n: figures([g for g, k in zip(self.generations, groups, strict=True) if k == n]) for n in names}

    def to_dict(self, with_generations: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "generations"}
        if with_generations:
            d["generations"] = [asdict(g) for g in self.generations]
        return d


def split_prompt(conv: Conversation) -> tuple[list, Message | None]:
    """Prompt messages (everything before the last assistant turn) and that turn (the reference)."""
    msgs = list(conv.messages)
    if msgs and msgs[-1].role == "assistant":
        return msgs[:-1], msgs[-1]
    return msgs, None


def reference_text(renderer: ChatRenderer, conv: Conversation) -> str | None:
    """What the last reply trains, before its closing sequence, decoded: the text a perfect model writes."""
    if conv.messages[-1].role != "assistant":
        return None
    last = Conversation(
        tuple(replace(m, train=(i == len(conv.messages) - 1)) for i, m in enumerate(conv.messages)), tools=conv.tools
    )
    example = renderer.render(last)[-1]
    closing = example.closings[-1][0]
    trained = example.input_ids[:closing][example.mask[:closing]]
    return renderer.tokenizer.decode(trained, skip_special_tokens=False)


def _percentile(values: Sequence[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return float(s[k])


@torch.no_grad()
def generate_batch(
    model: Any,
    stop_ids: Sequence[int],
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[list[int]]:
    """Generate for prompts padded on the left, stopping at any of `stop_ids`; returns the new tokens of each (up to
    and including the stop token)."""
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
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )
    stops = set(stop_ids)
    result = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        result.append(row[:cut])
    return result


def evaluate_stopping(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    renderer: ChatRenderer | None = None,
    advance: Callable[[int], None] | None = None,
    stop_ids: Sequence[int] | None = None,
) -> StopReport:
    """Generate an answer for every conversation's last turn and measure how the model stops; `advance(n)` is
    called after each batch of n prompts (`eosguard.base.progress`). stop_ids: where generation stops (default: every
    stop token of the template; `eosguard fix` passes a folder's own generation config to measure it as it stands).

    Example:
        >>> # report = evaluate_stopping(model, tokenizer, heldout); report.stop_rate
    """
    renderer = renderer or ChatRenderer(tokenizer)
    stop_ids = list(stop_ids or renderer.stop_ids)
    stops = set(stop_ids)
    leaks = RoleLeaks(tokenizer, renderer.template)
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id in stops:
        # A pad equal to a stop token would make padded prompts look like finished turns; use unk or 0 instead.
        pad_id = tokenizer.unk_token_id if tokenizer.unk_token_id not in (None, *stops) else 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    # Sort by prompt length so batches pad little; results go back in input order.
    prompts_of = [renderer.prompt_ids(split_prompt(c)[0], tools=c.tools) for c in conversations]
    order = sorted(range(len(conversations)), key=lambda i: len(prompts_of[i]))
    slots: dict[int, Generation] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        outputs = generate_batch(
            model,
            stop_ids,
            [prompts_of[i] for i in idx],
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            do_sample=do_sample,
            temperature=temperature,
        )
        for i, new in zip(idx, outputs, strict=True):
            msgs, ref = split_prompt(conversations[i])
            stopped = bool(new) and new[-1] in stops
            body = new[:-1] if stopped else new
            leak = leaks.in_ids(body)
            slots[i] = Generation(
                prompt=msgs[-1].content,
                reference=reference_text(renderer, conversations[i]) if ref is not None else None,
                output=tokenizer.decode(body, skip_special_tokens=False),
                stopped=stopped,
                new_tokens=len(new),
                role_leak=leak,
                kind="tool_call" if ref is not None and ref.tool_calls else "reply",
            )
        if advance is not None:
            advance(len(idx))
    gens = [slots[i] for i in range(len(conversations))]
    if was_training:
        model.train()
    return StopReport.of(gens, time.perf_counter() - start)


def _contains(ids: Sequence[int], part: Sequence[int]) -> bool:
    k = len(part)
    return bool(k) and any(list(ids[i : i + k]) == list(part) for i in range(len(ids) - k + 1))


def figures(gens: Sequence[Generation]) -> dict[str, Any]:
    n = len(gens)
    refs = [g for g in gens if g.reference is not None]
    lengths = [g.new_tokens for g in gens]
    return {
        "n": n,
        "stop_rate": sum(g.stopped for g in gens) / n if n else 0.0,
        "runaway_rate": sum(not g.stopped for g in gens) / n if n else 0.0,
        "role_leak_rate": None
        if any(g.role_leak is None for g in gens)
        else sum(g.role_leak for g in gens) / n
        if n
        else 0.0,
        "exact_match": (sum(g.exact for g in refs) / len(refs)) if refs else None,
        "mean_new_tokens": sum(lengths) / n if n else 0.0,
        "p95_new_tokens": _percentile(lengths, 0.95),
    }


__all__ = [
    "Generation",
    "RoleLeaks",
    "StopReport",
    "evaluate_stopping",
    "figures",
    "generate_batch",
    "split_prompt",
]
