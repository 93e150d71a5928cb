"""Preference records (DPO, ORPO, SimPO, CPO, reward models) and unpaired ones (KTO), in TRL's dataset formats, each
validated as conversations are (`eosguard.data.conversations`): a bad record names its file and line.

Accepted record shapes (one JSON object per line in `.jsonl`, or rows of a `datasets` folder):

    paired, conversational: {"prompt": [messages], "chosen": [one assistant message], "rejected": [one], "tools"?}
    paired, implicit prompt: {"chosen": [messages], "rejected": [messages]}: the prompt is the messages they share
    paired, plain text:     {"prompt": str, "chosen": str, "rejected": str}
    unpaired:               {"prompt": ..., "completion": ..., "label": true | false}   (conversational or text)

A completion is one assistant message (text, reasoning, tool calls), the reply the model writes after the prompt;
the prompt ends where a reply is due (a user turn or a tool result). Plain text is taken as already formatted (its
control-token text is the template's): the renderer closes each completion with the template's closing sequence
exactly once (`eosguard.chat.preference`). A record's `chat_template_kwargs` are refused: a run renders every record
with its own template arguments (`--template-arg`), as training and inference must agree.

Run as:
    eosguard prepare pairs.jsonl --tokenizer PATH --out prepared/   # a bad record: its file and line, exit 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from eosguard.data.conversations import OPENAI, Conversation, Message, check_content, check_order, parse_message
from eosguard.data.conversations import parse_tools as _parse_tools

Kind = Literal["paired", "unpaired"]
PREFERENCE_KEYS = ("prompt", "chosen", "rejected", "completion", "label")


@dataclass(frozen=True)
class Preference:
    """One preference record: the prompt (messages, or formatted text), the completions (`chosen`, and `rejected`
    for a pair; an unpaired record's one completion is `chosen`, its `label` says whether it is desirable), where it
    came from. `conversational`: messages, not text."""

    prompt: tuple[Message, ...] | str
    chosen: Message | str
    rejected: Message | str | None = None
    label: bool | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    source: str = "<memory>"
    line: int | None = None

    @property
    def kind(self) -> Kind:
        return "paired" if self.rejected is not None else "unpaired"

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)

    @property
    def completions(self) -> tuple[Message | str, ...]:
        """The completions in the order their ids are written: chosen, rejected (or the one completion)."""
        return (self.chosen,) if self.rejected is None else (self.chosen, self.rejected)

    def conversation(self, completion: Message) -> Conversation:
        """The prompt with one completion as its last reply (conversational records)."""
        assert isinstance(self.prompt, tuple)
        return Conversation((*self.prompt, completion), source=self.source, line=self.line, tools=self.tools)


def is_preference(record: Any) -> bool:
    """Whether a decoded record is a preference record (else a conversation, `parse_record`'s shapes)."""
    return isinstance(record, dict) and ("chosen" in record or "completion" in record)


def _messages(raw: Any, key: str) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{key!r} must be a non-empty list of messages, or text")
    out = []
    for i, m in enumerate(raw):
        try:
            message = parse_message(m, i, OPENAI)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        if message.train is not None:
            raise ValueError(f"{key}[{i}]: 'train' has no meaning in a preference record (the completion is trained)")
        out.append(message)
    return out


def _completion(messages: list[Message], key: str) -> Message:
    if len(messages) != 1 or messages[0].role != "assistant":
        roles = ", ".join(m.role for m in messages)
        raise ValueError(f"{key!r} must be one assistant message, the reply to the prompt (got roles [{roles}])")
    return messages[0]


def _shared_prompt(chosen: list[Message], rejected: list[Message]) -> list[Message]:
    """TRL's implicit prompt: the leading messages `chosen` and `rejected` share, up to the last reply of each."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n]


def parse_preference(record: Any) -> Preference:
    """Validate one decoded JSON preference record (see the module doc); ValueError with the reason otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    if "chat_template_kwargs" in record:
        raise ValueError(
            "'chat_template_kwargs' per record: eosguard renders every record with the run's template arguments "
            "(--template-arg), as inference will"
        )
    paired = "chosen" in record or "rejected" in record
    if paired and "completion" in record:
        raise ValueError("record has both 'completion' and 'chosen' / 'rejected'; keep one format")
    needed = ("chosen", "rejected") if paired else ("prompt", "completion", "label")
    missing = [k for k in needed if k not in record]
    if missing:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise ValueError(f"{'a paired' if paired else 'an unpaired'} record needs {', '.join(missing)} (keys: {keys})")
    label = record.get("label")
    if not paired and not isinstance(label, bool):
        raise ValueError(f"'label' must be true or false, got {label!r}")
    sides = ("chosen", "rejected") if paired else ("completion",)
    texts = [isinstance(record.get(k), str) for k in ("prompt", *sides) if k in record]
    tools = None if record.get("tools") in (None, "", []) else _parse_tools(record["tools"])
    if all(texts):
        if "prompt" not in record:
            raise ValueError("a plain-text pair needs its 'prompt' (TRL's implicit prompt is for messages only)")
        prompt = check_content(record["prompt"], "prompt")
        done = tuple(check_content(record[k], k) for k in sides)
        if tools:
            raise ValueError("'tools' need conversational records (messages): plain text is rendered already")
        return Preference(prompt, done[0], done[1] if paired else None, None if paired else label)
    if any(texts):
        raise ValueError("mixes text and message lists: a record is conversational or plain text throughout")
    lists = {k: _messages(record[k], k) for k in sides}
    if "prompt" in record:
        prompt = _messages(record["prompt"], "prompt")
    else:
        prompt = _shared_prompt(lists["chosen"], lists["rejected"])
        lists = {k: v[len(prompt) :] for k, v in lists.items()}
    done = tuple(_completion(lists[k], k) for k in sides)
    if prompt and prompt[-1].role == "assistant":
        raise ValueError("the prompt ends with an assistant turn: a completion answers a user turn or a tool result")
    for reply in done:
        try:
            check_order([*prompt, reply])
        except ValueError as exc:
            raise ValueError(f"prompt: {exc}") from None
    return Preference(tuple(prompt), done[0], done[1] if paired else None, None if paired else label, tools)


__all__ = ["PREFERENCE_KEYS", "Kind", "Preference", "is_preference", "parse_preference"]
