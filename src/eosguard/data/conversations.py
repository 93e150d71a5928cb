"""Conversations: the data model (messages, tool calls, reasoning, tools) and the validation of every record.

Accepted record shapes (one JSON object per line in `.jsonl`, or rows of a `datasets` Arrow/Parquet folder):

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str | [text parts], "train": bool?,
                   "reasoning_content": str?, "tool_calls": [...]?, "tool_call_id": str?}, ...],
     "tools": [function schemas]?}
    {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation", "value": str,
                        "weight": 0|1?}, ...], "tools": ...?}

Reasoning comes as `reasoning_content` or as a `<think>...</think>` block opening an assistant's content (split off
here, so the template renders it with its own reasoning support). Tool calls come in OpenAI's shape (arguments an
object or a JSON string; parsed here); a tool result answers a call by `tool_call_id`, or the oldest open call when
it has none. Content parts are joined when they are text; other kinds (images) are refused.

`parse_record` raises ValueError with the reason; `eosguard.data.records` reads files and adds their file and line.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# LLaMA-Factory's ShareGPT shape writes tool calls as `function_call` turns (a JSON call, or a list of them) and tool
# results as `observation` turns.
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "function_call": "assistant",
    "observation": "tool",
}

# The renderer marks the template's control tokens and content slots with characters of Unicode plane 15's private
# use area (eosguard.chat.templates.RESERVED_RANGE); content holding them is rejected so no text collides with a marker.
RESERVED_RANGE = (0xF0000, 0xFFFFD)
_RESERVED = re.compile(f"[{chr(RESERVED_RANGE[0])}-{chr(RESERVED_RANGE[1])}]")

# Reasoning written inside an assistant's content, as DeepSeek-R1 and Qwen3 emit it: `<think>...</think>answer`.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of an assistant turn (OpenAI's shape): `arguments` always a JSON object, parsed."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The call as chat templates read it: `{"type": "function", "function": {"name", "arguments"}, "id"?}`.

        Arguments go in as an object, the shape transformers documents for `apply_chat_template(tools=...)`; a
        template that only concatenates strings rejects it, and that is reported, never patched over.
        """
        call: dict[str, Any] = {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        if self.id is not None:
            call["id"] = self.id
        return call


@dataclass(frozen=True, slots=True)
class Message:
    """One turn.

    role: system, user, assistant or tool; content: its text ("" only for an assistant turn that makes tool calls);
    train: whether an assistant turn is supervised (None: follow the run's policy); reasoning: an assistant turn's
    reasoning (`reasoning_content`, or a `<think>...</think>` block that opened its content); tool_calls: the calls
    an assistant turn makes; tool_call_id / name: which call a tool message answers.
    """

    role: Role
    content: str
    train: bool | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def plain(self) -> bool:
        """A system, user or assistant turn of text alone (no reasoning, no tool call, not a tool result)."""
        return self.role != "tool" and self.reasoning is None and not self.tool_calls

    def as_dict(self) -> dict[str, Any]:
        """The message as `tokenizer.apply_chat_template` takes it (OpenAI's shape)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning is not None:
            out["reasoning_content"] = self.reasoning  # transformers copies it to `thinking` (gpt-oss) as well
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class Conversation:
    """A validated conversation plus where it came from (for messages that point at the source).

    tools: the function schemas offered to the model in this conversation (passed to the template as `tools`);
    None: the run's default (`--tools` / `data.tools`), if any.
    """

    messages: tuple[Message, ...]
    source: str = "<memory>"
    line: int | None = None
    tools: tuple[dict[str, Any], ...] | None = None

    def as_dicts(self) -> list[dict[str, Any]]:
        """The messages in the shape `tokenizer.apply_chat_template` takes."""
        return [m.as_dict() for m in self.messages]

    @property
    def plain(self) -> bool:
        """Text turns only: no tools offered, no reasoning, no tool call or result."""
        return not self.tools and all(m.plain for m in self.messages)


def _check_text(text: str, where: str, *, empty_ok: bool = False) -> str:
    if not empty_ok and not text.strip():
        raise ValueError(f"{where}: content is empty")
    if "\x00" in text:
        raise ValueError(f"{where}: content contains a NUL character")
    if _RESERVED.search(text):
        raise ValueError(f"{where}: content contains a reserved private-use character (U+F0000..U+FFFFD)")
    return text


def check_content(content: Any, where: str, *, empty_ok: bool = False) -> str:
    """A string, or OpenAI-style content parts whose text parts are joined (other part types are refused)."""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or "type" not in part:
                raise ValueError(f"{where}: content part {j} must be an object with a 'type', got {part!r:.40}")
            if part["type"] != "text":
                raise ValueError(
                    f"{where}: content part {j} has type {part['type']!r}: eosguard trains on text only "
                    '(give text parts, {"type": "text", "text": ...})'
                )
            if not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: content part {j} has no string 'text'")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None and empty_ok:
        content = ""
    if not isinstance(content, str):
        raise ValueError(f"{where}: content must be a string, got {type(content).__name__}")
    return _check_text(content, where, empty_ok=empty_ok)


def _split_reasoning(content: str, where: str) -> tuple[str | None, str]:
    """`<think>reasoning</think>answer` at the start of a reply, as (reasoning, answer); (None, content) otherwise."""
    if not content.lstrip().startswith(THINK_OPEN):
        return None, content
    if THINK_CLOSE not in content:
        raise ValueError(f"{where}: content opens {THINK_OPEN} but never closes it with {THINK_CLOSE}")
    reasoning, _, answer = content.lstrip()[len(THINK_OPEN) :].partition(THINK_CLOSE)
    return reasoning.strip("\n"), answer.lstrip("\n")


def _parse_arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: arguments are not JSON: {exc.msg} (column {exc.colno})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: arguments must be a JSON object, got {type(raw).__name__}")
    _check_strings(raw, where)
    return raw


def _check_strings(value: Any, where: str) -> None:
    """Every string inside a JSON value passes the content checks (NUL, reserved characters)."""
    if isinstance(value, str):
        _check_text(value, where, empty_ok=True)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(str(k), where, empty_ok=True)
            _check_strings(v, where)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, where)


def _tool_call(raw: Any, where: str) -> ToolCall:
    """OpenAI's `{"id"?, "type": "function", "function": {"name", "arguments"}}` or a flat `{"name", "arguments"}`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, got {type(raw).__name__}")
    fn = raw.get("function", raw)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise ValueError(f"{where} has no function name")
    call_id = raw.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError(f"{where}: id must be a string, got {type(call_id).__name__}")
    name = _check_text(fn["name"], where)
    return ToolCall(name=name, arguments=_parse_arguments(fn.get("arguments"), where), id=call_id)


def parse_tools(raw: Any, where: str = "tools") -> tuple[dict[str, Any], ...]:
    """A list of function schemas (OpenAI's `{"type": "function", "function": {...}}` or bare `{"name", ...}`), or
    that list as a JSON string; ValueError naming the entry otherwise."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is a string but not JSON: {exc.msg}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of function schemas, got {type(raw).__name__}")
    for j, tool in enumerate(raw):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"{where}[{j}] must be a function schema with a name")
        _check_strings(tool, f"{where}[{j}]")
    return tuple(raw)


@dataclass(frozen=True)
class _Shape:
    """The key names of one record shape; both shapes are validated by the same code."""

    list_key: str
    role_key: str
    content_key: str
    roles: dict[str, str]
    role_word: str
    flag_key: str
    flag_values: dict[Any, bool]  # accepted values of the per-message training flag -> train


OPENAI = _Shape("messages", "role", "content", {r: r for r in ROLES}, "role", "train", {True: True, False: False})
SHAREGPT = _Shape("conversations", "from", "value", SHAREGPT_ROLES, "speaker", "weight", {1: True, 0: False})


def parse_message(raw: Any, i: int, shape: _Shape) -> Message:
    where = f"{shape.list_key}[{i}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, got {type(raw).__name__}")
    if shape.role_key not in raw:
        raise ValueError(f"{where} is missing {shape.role_key!r}")
    who = raw[shape.role_key]
    if not isinstance(who, str) or who not in shape.roles:
        raise ValueError(f"{where}: unknown {shape.role_word} {who!r} (expected one of {', '.join(shape.roles)})")
    role = shape.roles[who]
    calls_given = raw.get("tool_calls") is not None
    if shape.content_key not in raw and not (role == "assistant" and calls_given):
        raise ValueError(f"{where} is missing {shape.content_key!r}")
    flag = raw.get(shape.flag_key)
    # `type(...) is` keeps true/false and 1/0 apart: "train": 1 and "weight": true are both errors.
    if flag is not None and not any(flag == v and type(flag) is type(v) for v in shape.flag_values):
        allowed = " or ".join(json.dumps(v) for v in shape.flag_values)
        raise ValueError(f"{where}: {shape.flag_key!r} must be {allowed}, got {flag!r}")
    train = None if flag is None else shape.flag_values[flag]
    if who == "function_call":  # ShareGPT: the value is the call (or a list of calls) as JSON
        calls = raw[shape.content_key]
        try:
            calls = json.loads(calls) if isinstance(calls, str) else calls
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: a function_call value must be JSON: {exc.msg}") from None
        calls = calls if isinstance(calls, list) else [calls]
        tool_calls = tuple(_tool_call(c, f"{where}.value[{j}]") for j, c in enumerate(calls))
        return Message(role="assistant", content="", train=train, tool_calls=tool_calls)
    if role != "assistant":
        for key in ("tool_calls", "reasoning_content"):
            if raw.get(key) is not None:
                raise ValueError(f"{where}: only an assistant message may have {key!r} (this one is {role})")
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ValueError(f"{where}: {key!r} must be a string")
        content = check_content(raw[shape.content_key], where, empty_ok=True)
        return Message(role="tool", content=content, tool_call_id=raw.get("tool_call_id"), name=raw.get("name"))
    if role != "assistant":
        return Message(role=role, content=check_content(raw[shape.content_key], where), train=train)  # type: ignore[arg-type]
    tool_calls = ()
    if calls_given:
        if not isinstance(raw["tool_calls"], list):
            raise ValueError(f"{where}: 'tool_calls' must be a list")
        tool_calls = tuple(_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw["tool_calls"]))
    content = check_content(raw.get(shape.content_key), where, empty_ok=bool(tool_calls))
    reasoning = raw.get("reasoning_content")
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise ValueError(f"{where}: 'reasoning_content' must be a string, got {type(reasoning).__name__}")
        _check_text(reasoning, where, empty_ok=True)
        if content.lstrip().startswith(THINK_OPEN):
            raise ValueError(f"{where}: reasoning given twice: 'reasoning_content' and a {THINK_OPEN} block in content")
        reasoning = reasoning.strip("\n") or None
    else:
        reasoning, content = _split_reasoning(content, where)
        reasoning = reasoning or None
    if not content.strip() and not tool_calls:
        raise ValueError(f"{where}: content is empty" + (" after its reasoning" if reasoning else ""))
    return Message(role="assistant", content=content, train=train, reasoning=reasoning, tool_calls=tool_calls)


def check_order(messages: list[Message]) -> None:
    """System only first; at least one assistant turn; assistant turns answer something; every tool result answers
    a call, and every call is answered before the conversation goes on (the calls of a final turn may stay open:
    that turn is what is trained)."""
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
    if not any(m.role == "assistant" for m in messages):
        raise ValueError("no assistant turn (nothing to train)")
    first_assistant = next(i for i, m in enumerate(messages) if m.role == "assistant")
    if not any(m.role == "user" for m in messages[:first_assistant]):
        raise ValueError("the first assistant turn answers no user turn")
    open_calls: list[tuple[int, ToolCall]] = []
    for i, m in enumerate(messages):
        if m.role == "tool":
            match = next((j for j, (_, c) in enumerate(open_calls) if c.id == m.tool_call_id), None)
            if match is None and m.tool_call_id is None and open_calls:
                match = 0  # no id: it answers the oldest open call, in order
            if match is None:
                said = f" (tool_call_id {m.tool_call_id!r})" if m.tool_call_id is not None else ""
                raise ValueError(f"message {i}: a tool result{said} that answers no open tool call")
            open_calls.pop(match)
            continue
        if open_calls:
            j, call = open_calls[0]
            said = f" (id {call.id!r})" if call.id is not None else ""
            raise ValueError(f"message {j}: tool call {call.name!r}{said} is never answered before message {i}")
        open_calls = [(i, c) for c in m.tool_calls]


def parse_record(record: Any) -> tuple[tuple[Message, ...], tuple[dict[str, Any], ...] | None]:
    """Validate one decoded JSON record: its messages and its `tools` (None when it has none); ValueError with the
    reason otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    has_openai, has_sharegpt = "messages" in record, "conversations" in record
    if has_openai and has_sharegpt:
        raise ValueError("record has both 'messages' and 'conversations'; keep one")
    if not (has_openai or has_sharegpt):
        keys = ", ".join(sorted(map(str, record))) or "none"
        pairs = {"chosen", "rejected"} <= set(record) or {"prompt", "completion", "label"} <= set(record)
        hint = ": a preference record (DPO / KTO: `method: dpo` or `kto` in the train config)" if pairs else ""
        raise ValueError(f"record has neither 'messages' nor 'conversations' (keys: {keys}){hint}")
    turns = record["messages" if has_openai else "conversations"]
    if not isinstance(turns, list):
        raise ValueError(f"'{'messages' if has_openai else 'conversations'}' must be a list")
    if not turns:
        raise ValueError("conversation is empty")
    shape = OPENAI if has_openai else SHAREGPT
    messages = [parse_message(raw, i, shape) for i, raw in enumerate(turns)]
    check_order(messages)
    tools = None if record.get("tools") in (None, "", []) else parse_tools(record["tools"])
    return tuple(messages), tools


def conversation(*turns: tuple[str, str] | Message, tools: Sequence[dict[str, Any]] | None = None) -> Conversation:
    """Build a validated conversation in code: `conversation(("user", "Hi"), ("assistant", "Hello"))`; a turn
    may be a `Message` (reasoning, tool calls, tool results)."""
    raw = [t if isinstance(t, Message) else Message(role=t[0], content=t[1]) for t in turns]  # type: ignore[arg-type]
    record: dict[str, Any] = {
        "messages": [{**m.as_dict(), **({} if m.train is None else {"train": m.train})} for m in raw]
    }
    if tools:
        record["tools"] = list(tools)
    messages, parsed_tools = parse_record(record)
    return Conversation(messages=messages, tools=parsed_tools)
