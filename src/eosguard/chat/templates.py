"""Chat templates, read off the template itself: what closes each kind of reply, and where each reply is trained.

eosguard keeps no per-family tables. Given a tokenizer's own Jinja chat template (Llama-3, Gemma, Qwen3, gpt-oss,
GLM, DeepSeek-R1, Mistral, ... or ChatML when it has none) and its template arguments (`enable_thinking`, ...),
`ChatTemplate` renders *skeleton* conversations whose contents are unique slots (`eosguard.chat.markers`) and reads:

- what the template renders: reasoning, tool calls (one or several per turn), tool results, the `tools` list;
- the **end-of-turn token of each kind of reply** (a final answer, a tool call): the last control token the template
  writes after the reply whether the reply ends the conversation or another message follows, and never inside a
  reply (`Closer`). Command-R7B closes with `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`: the whole sequence is trained
  and the second token is the stop token; gpt-oss closes a last final answer with `<|return|>` (`<|end|>` once
  later turns follow: `Closer.in_history` is False) and a tool call with `<|call|>`; a template that writes nothing
  after a reply (GLM-4.5) is closed by the token that opens the next turn (`<|user|>`, `<|observation|>`), which
  eosguard appends after a last reply, but only where the model is known to stop on that token (`stops`: its
  generation config's eos ids) or, with none known, where the template closes no turn of any role with a token of
  its own (GLM: then the token is kept in `ChatTemplate.assumed`, for the doctor to state). A ChatML
  template that drops `<|im_end|>` after replies alone, or that writes an eos once at the end of a conversation, is
  closed by nothing: `template-no-eos`;
- the assistant header (for the collator guard) and the strings the template tests content against.

Where each reply of a conversation is trained, from these, is `eosguard.chat.placement`'s job.

Anything a template does that cannot be followed raises `TemplateError` naming the behaviour; nothing is guessed.

Why ~450 lines in one module: reading a template is one algorithm (probes, closers, headers, capabilities) whose
parts share the same skeleton renderings; split up, each part would need the others' internals.

Run as:
    eosguard doctor --tokenizer PATH   # step 2 says what closes each kind of reply
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from eosguard.base.errors import EosguardError
from eosguard.chat.families import CHATML_TOKENS, chatml_template
from eosguard.chat.markers import SLOT, Markers, slot
from eosguard.chat.template_args import template_arguments, with_arguments

Kind = Literal["reply", "tool_call"]
KINDS: tuple[Kind, ...] = ("reply", "tool_call")
KIND_NAMES: dict[str, str] = {"reply": "final answers", "tool_call": "tool calls"}  # for reports, in the plural


class TemplateError(EosguardError):
    """The chat template cannot be split into messages and stop tokens; the message names the behaviour.

    `finding` is the doctor finding it amounts to: "template-no-eos" when a reply is not closed by a control
    token, "template-unsupported" otherwise.
    """

    def __init__(self, message: str, *, hint: str | None = None, finding: str = "template-unsupported") -> None:
        super().__init__(message, hint=hint)
        self.finding = finding


class Closer(NamedTuple):
    """What ends one kind of reply: `token` (the stop token), the control tokens of its closing `sequence` (ending
    with `token`, all trained), whether the template writes it only as the next turn's opening (`appended`:
    eosguard writes it after a last reply), and whether the same sequence still follows the reply once later turns
    follow (`in_history`; gpt-oss writes `<|end|>` there instead of `<|return|>`)."""

    token: str
    id: int
    sequence: tuple[str, ...]
    appended: bool = False
    in_history: bool = True


@dataclass(frozen=True)
class Turn:
    """What `eosguard.chat.placement.plan` needs of one message: its role, its kind of reply, and the text to put in an
    opened reasoning block (the reasoning itself, or its slot in a skeleton; None when the message has none)."""

    role: str
    kind: Kind = "reply"
    reasoning: str | None = None


@dataclass
class Capabilities:
    """What the template renders (from skeleton probes)."""

    reasoning: bool = False
    tool_calls: bool = False
    parallel_calls: bool = False
    tools: bool = False
    tool_results: bool = False


# -- skeletons ------------------------------------------------------------------------------------------------
# Slot numbers: message i's content is slot 2i, its reasoning 2i + 1; probes use their own fixed numbers.
_TOOL_SLOT = 900  # a tool-call argument in probes (one per call: 900, 901)
_SCHEMA_SLOT = 950  # the description of the probes' tool schema


def _probe_call(j: int) -> dict[str, Any]:
    name = f"tool_{j}"
    # Ids of 9 characters: Mistral's templates refuse any other length.
    call = {"name": name, "arguments": {"q": slot(_TOOL_SLOT + j)}}
    return {"id": f"call{j:05d}", "type": "function", "function": call}


_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{j}",
            "description": slot(_SCHEMA_SLOT + j),
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    for j in range(2)
]


def _reply(i: int, kind: Kind, reasoning: bool = False, calls: int = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": slot(2 * i) if kind == "reply" else ""}
    if reasoning:
        msg["reasoning_content"] = slot(2 * i + 1)
    if kind == "tool_call":
        msg["tool_calls"] = [_probe_call(j) for j in range(calls)]
    return msg


def _user(i: int) -> dict[str, Any]:
    return {"role": "user", "content": slot(2 * i)}


def _tool_result(i: int) -> dict[str, Any]:
    return {"role": "tool", "content": slot(2 * i), "tool_call_id": "call00000", "name": "tool_0"}


def _after_last_slot(text: str, slots: Sequence[int]) -> int:
    """The position just past the last of `slots` in `text` (-1 when none is there)."""
    ends = [m.end() for m in SLOT.finditer(text) if int(m.group(1)) in slots]
    return max(ends, default=-1)


def common_prefix(a: str, b: str) -> int:
    """How many leading characters two strings share."""
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 (character by character is what is meant)


class ChatTemplate:
    """A tokenizer's chat template, read into what training needs (see the module doc).

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        source: the Jinja template; default: the tokenizer's own. A tokenizer without one gets a clear error
            (`eosguard.chat.tokenizer_setup.prepare_tokenizer` installs ChatML).
        args: template arguments (`enable_thinking`, `reasoning_effort`, ...), made the template's defaults.
        stops: ids the model is known to stop on (its generation config's eos ids); None: unknown. Decides whether
            a reply closed only by the next turn's token (GLM) is closed at all (see the module doc).

    Example:
        >>> from eosguard.testing.fixtures import family_tokenizer
        >>> t = ChatTemplate(family_tokenizer("llama3"))
        >>> t.end_of_turn, t.tokenizer.decode(t.assistant_header_ids)
        ('<|eot_id|>', '<|start_header_id|>assistant<|end_header_id|>')
    """

    def __init__(
        self,
        tokenizer: Any,
        source: str | None = None,
        args: Mapping[str, Any] | None = None,
        stops: Collection[int] | None = None,
    ) -> None:
        require_fast(tokenizer)
        self.tokenizer = tokenizer
        raw = source or getattr(tokenizer, "chat_template", None)
        if not raw:
            raise TemplateError(
                "the tokenizer has no chat template",
                hint="eosguard.chat.tokenizer_setup.prepare_tokenizer installs ChatML (or set one on the tokenizer)",
            )
        self.source = with_arguments(raw, args or {})
        self.args = template_arguments(self.source)
        self.markers = Markers(tokenizer)
        self.control_ids = self.markers.control_ids
        # Opening -> closing of reasoning-style blocks: control-token markers (<think> as a token), and the same tags
        # as plain text where the vocabulary has no such token (R1-style templates on SmolLM2's tokenizer).
        self.block_pairs = {**_block_pairs(self.markers), **_text_blocks(self.source, self.markers)}
        self.content_tests = _content_tests(self.source, self.markers)
        self.supports = Capabilities()
        self.closers: dict[Kind, Closer] = {}
        self.problems: dict[Kind, str] = {}
        self.known_stops = None if stops is None else frozenset(stops)
        self.assumed: dict[Kind, str] = {}  # next-turn tokens the model is assumed to stop on (no stops known)
        self._inside: dict[Kind, set[str]] = {}
        self._read()
        reply = self.closers.get("reply")
        self.end_of_turn: str | None = reply.token if reply else None
        self.end_of_turn_id: int | None = reply.id if reply else None
        self.problem: str | None = self.problems.get("reply")
        self.stop_tokens = list(dict.fromkeys(c.token for c in self.closers.values()))
        self.stop_ids = [self._id(t) for t in self.stop_tokens]
        # Control tokens no reply contains: a model that writes one is writing another turn (a role leak).
        in_replies = {self.markers.token_of[m] for kind in self.closers for m in self._inside_replies(kind)}
        in_replies |= {t for c in self.closers.values() for t in c.sequence}
        self.leak_ids = frozenset(self.control_ids - {self._id(t) for t in in_replies})
        self.assistant_header_ids = self._assistant_header() if reply else []
        self.user_header_ids = self._user_header() if reply else []

    def _id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    # -- rendering ------------------------------------------------------------------------------------------

    def render(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None, gen: bool = False
    ) -> str:
        """The template's own text for these messages (TemplateError when the template raises)."""
        try:
            return self.tokenizer.apply_chat_template(
                list(messages),
                tools=list(tools) if tools else None,
                chat_template=self.source,
                tokenize=False,
                add_generation_prompt=gen,
            )
        except Exception as exc:  # jinja's TemplateError, raise_exception(), a template bug: all are the template's
            roles = ", ".join(str(m.get("role")) for m in messages)
            raise TemplateError(f"the chat template rejects a conversation of roles [{roles}]: {exc}") from None

    def render_marked(self, messages: Sequence[Mapping[str, Any]], tools: Any = None, gen: bool = False) -> str:
        return self.markers.mark(self.render(messages, tools, gen))

    def mark(self, text: str) -> str:
        return self.markers.mark(text)

    def decode_marked(self, text: str) -> str:
        return self.markers.decode_marked(text)

    def encode_marked(self, texts: Sequence[str]) -> list[list[int]]:
        return self.markers.encode_marked(texts)

    # -- reading the template -------------------------------------------------------------------------------

    def _try(self, messages: Sequence[Mapping[str, Any]], tools: Any = None, gen: bool = False) -> str | None:
        try:
            return self.render_marked(messages, tools, gen)
        except TemplateError:
            return None

    def _read(self) -> None:
        """Probe what the template renders and read each kind of reply's closer."""
        self.render_marked([_user(0), _reply(1, "reply")])  # the template must take a plain exchange (or raise)
        with_reasoning = self._try([_user(0), _reply(1, "reply", reasoning=True)])
        self.supports.reasoning = with_reasoning is not None and slot(3) in with_reasoning
        one_call = self._try([_user(0), _reply(1, "tool_call")], _PROBE_TOOLS)
        self.supports.tool_calls = one_call is not None and slot(_TOOL_SLOT) in one_call
        two = self._try([_user(0), _reply(1, "tool_call", calls=2)], _PROBE_TOOLS) if self.supports.tool_calls else None
        self.supports.parallel_calls = two is not None and slot(_TOOL_SLOT) in two and slot(_TOOL_SLOT + 1) in two
        with_tools = self._try([_user(0), _reply(1, "reply")], _PROBE_TOOLS)
        self.supports.tools = with_tools is not None and slot(_SCHEMA_SLOT) in with_tools
        for kind in KINDS:
            if kind == "tool_call" and not self.supports.tool_calls:
                self.problems[kind] = (
                    "the chat template does not render tool calls"
                    if one_call is not None
                    else "the chat template rejects an assistant turn with tool calls"
                )
                continue
            try:
                self.closers[kind] = self._closer(kind)
            except TemplateError as exc:
                self.problems[kind] = exc.message
        if self.supports.tool_calls:
            result = self._try([_user(0), _reply(1, "tool_call"), _tool_result(2)], _PROBE_TOOLS)
            self.supports.tool_results = result is not None and slot(4) in result

    def _closer(self, kind: Kind) -> Closer:
        """The closer of one kind of reply (see the module doc), read off three renderings."""
        tools = _PROBE_TOOLS if kind == "tool_call" else None
        body = [2] if kind == "reply" else [_TOOL_SLOT, _TOOL_SLOT + 1]  # the reply's own slots
        after = [_user(0), _reply(1, kind)]
        nxt = _user(2) if kind == "reply" else _tool_result(2)
        as_last = self.render_marked(after, tools)
        with_next = self._try([*after, nxt], tools)
        if with_next is None:
            raise TemplateError(f"the chat template rejects a {kind.replace('_', ' ')} followed by another message")
        e1, e2 = _after_last_slot(as_last, body), _after_last_slot(with_next, body)
        if e1 < 0 or e2 < 0:
            raise TemplateError(f"the chat template drops the content of a {kind.replace('_', ' ')}")
        tail_last, tail_next = as_last[e1:], with_next[e2:]
        common = tail_last[: common_prefix(tail_last, tail_next)]
        structural = self._inside_replies(kind)
        in_common = [ch for ch in common if self.markers.is_control(ch) and ch not in structural]
        if in_common:  # written after the reply whether another message follows or not: the closer
            return self._make_closer(common, common.rindex(in_common[-1]), kind)
        rest = tail_last[len(common) :]
        first = next((ch for ch in rest if self.markers.is_control(ch) and ch not in structural), None)
        what = kind.replace("_", " ")
        if first is not None:  # a last reply is closed by its own token (gpt-oss <|return|>) ...
            closer = self._make_closer(rest, rest.index(first), kind)._replace(in_history=False)
            opener = self._assistant_opener()
            later = next((ch for ch in tail_next if self.markers.is_control(ch)), None)
            if later is None or later == opener:  # ... and an earlier one by nothing but the next turn
                raise TemplateError(
                    f"the chat template closes a last {what} with {closer.token} but writes no control token of "
                    "its own after earlier ones (the next turn follows them directly): trained on whole "
                    "conversations, the model learns to run on into the next turn",
                    **_NO_EOS,
                )
            return closer
        opener = next((ch for ch in tail_next[len(tail_last) :] if self.markers.is_control(ch)), None)
        if opener is not None and with_next[e2:].startswith(tail_last + opener):  # closed by the next turn (GLM)
            token = self.markers.token_of[opener]
            return self._next_turn_closer(Closer(token, self._id(token), (token,), appended=True), kind)
        raise TemplateError(f"the chat template writes no control token after a {what}", **_NO_EOS)

    def _next_turn_closer(self, closer: Closer, kind: Kind) -> Closer:
        """A reply closed by nothing but the next turn's opening token closes only where the model stops on that
        token: known from its generation config (`stops`), or assumed, with none known, where the template closes
        no turn of any role with a token of its own (GLM); anything else is a template that dropped its closer."""
        what = f"{kind.replace('_', ' ')}s are closed by nothing of their own (the next turn's {closer.token} follows)"
        if self.known_stops is not None:
            if closer.id in self.known_stops:
                return closer
            raise TemplateError(
                f"{what}, and the model's generation config does not stop on {closer.token} (eos ids "
                f"{sorted(self.known_stops)})",
                **_NO_EOS,
            )
        own = self._user_closer()
        if own is not None:
            raise TemplateError(
                f"{what}, while user turns are closed by {own}: the replies' closer is missing", **_NO_EOS
            )
        self.assumed[kind] = closer.token
        return closer

    def _assistant_opener(self) -> str | None:
        """The first control token the generation prompt writes: what opens an assistant turn."""
        plain = self.render_marked([_user(0)])
        prompt = self.render_marked([_user(0)], gen=True)
        return next((ch for ch in prompt[common_prefix(plain, prompt) :] if self.markers.is_control(ch)), None)

    def _user_closer(self) -> str | None:
        """The control token the template writes after a user's content when the conversation ends there (None when
        it writes none: a template whose turns are closed by the next one's opening)."""
        text = self.render_marked([_user(0)])
        tail = text[_after_last_slot(text, [0]) :]
        return next((self.markers.token_of[ch] for ch in tail if self.markers.is_control(ch)), None)

    def _make_closer(self, text: str, at: int, kind: Kind) -> Closer:
        """The closer at `at` of `text`, with the run of control tokens that ends at it as its sequence."""
        begin = at
        while begin > 0 and self.markers.is_control(text[begin - 1]):
            begin -= 1
        sequence = tuple(self.markers.token_of[ch] for ch in text[begin : at + 1])
        return Closer(sequence[-1], self._id(sequence[-1]), sequence)

    def _inside_replies(self, kind: Kind) -> set[str]:
        """Markers a reply of this kind writes before its last content: never a closer (GLM's `</tool_call>`)."""
        if kind in self._inside:
            return self._inside[kind]
        probes = [[_user(0), _reply(1, kind, calls=2 if self.supports.parallel_calls else 1)]]
        if self.supports.reasoning:
            probes.append([_user(0), _reply(1, kind, reasoning=True)])
        seen: set[str] = set()
        tools = _PROBE_TOOLS if kind == "tool_call" else None
        for msgs in probes:
            text = self._try(msgs, tools)
            prompt = self._try(msgs[:1], tools, gen=True)
            if text is None or prompt is None:
                continue
            body = [2] if kind == "reply" else [_TOOL_SLOT, _TOOL_SLOT + 1]
            end = _after_last_slot(text, body)
            start = common_prefix(prompt, text)
            seen |= {ch for ch in text[start:end] if self.markers.is_control(ch)}
        self._inside[kind] = seen
        return seen

    def _assistant_header(self) -> list[int]:
        """Ids that introduce an assistant reply in any pipeline's rows: the fixed text between a user's content and
        the reply, after the user's closing token, as every reply (last or earlier) has it, without trailing
        whitespace tokens."""
        prompt = self.render_marked([_user(0)], gen=True)
        tail = prompt[_after_last_slot(prompt, [0]) :]
        history = self._try([_user(0), _reply(1, "reply"), _user(2), _reply(3, "reply")])
        if history is not None:
            after_user = history[_after_last_slot(history, [0]) :]
            tail = tail[: common_prefix(tail, after_user)]
        stops = {self.markers.marker_of[t] for t in self.stop_tokens}
        cut = max((i + 1 for i, ch in enumerate(tail) if ch in stops), default=0)
        return self._trimmed_ids(tail[cut:].lstrip())

    def _user_header(self) -> list[int]:
        """Ids that open a user turn after a reply (a model that writes them is writing the user's turn itself)."""
        text = self._try([_user(0), _reply(1, "reply"), _user(2)])
        if text is None:
            return []
        start = _after_last_slot(text, [2])
        header = text[start : _after_last_slot(text, [4]) - len(slot(4))]
        closer = self.closers["reply"]
        marker = self.markers.marker_of[closer.token]
        if marker in header:
            header = header[header.index(marker) + 1 :]
        return self._trimmed_ids(header.strip())

    @functools.cached_property
    def stripped_headers(self) -> tuple[str, ...]:
        """What the template writes between a reply and the next user's content, and between a user's content and a
        reply, with its control tokens removed: the text a server that strips them (vLLM by default, llama.cpp's
        server) returns for a turn the model writes itself (ChatML: `\\nuser\\n`, `\\nassistant\\n`). Only
        those with a letter and a line break (a bare `user` would match ordinary text)."""
        found = []
        history = self._try([_user(0), _reply(1, "reply"), _user(2)])
        if history is not None:
            found.append(history[_after_last_slot(history, [2]) : _after_last_slot(history, [4]) - len(slot(4))])
        prompt = self.render_marked([_user(0)], gen=True)
        found.append(prompt[_after_last_slot(prompt, [0]) :])
        texts = ("".join(ch for ch in f if not self.markers.is_control(ch)) for f in found)
        return tuple(dict.fromkeys(t for t in texts if re.search(r"[^\W\d_]", t) and "\n" in t))

    def _trimmed_ids(self, marked: str) -> list[int]:
        ids = self.encode_marked([marked])[0]
        while ids and ids[-1] not in self.control_ids and not self.tokenizer.decode([ids[-1]]).strip():
            ids.pop()
        return ids

    # -- placing replies ------------------------------------------------------------------------------------

    def require_end_of_turn(self) -> tuple[str, int]:
        """The end-of-turn token of a final reply and its id; TemplateError (template-no-eos) when there is none."""
        if self.end_of_turn is None or self.end_of_turn_id is None:
            raise TemplateError(f"cannot train with this chat template: {self.problem}", **_NO_EOS)
        return self.end_of_turn, self.end_of_turn_id

    def check_turns(self, turns: Sequence[Turn], *, tools: bool) -> None:
        """TemplateError when a conversation needs something this template does not render."""
        self.require_end_of_turn()
        if tools and not self.supports.tools:
            raise TemplateError("the chat template does not render the conversation's `tools`", hint=_TOOLS_HINT)
        for k, t in enumerate(turns):
            if t.kind == "tool_call" and "tool_call" not in self.closers:
                raise TemplateError(f"message {k} makes tool calls: {self.problems['tool_call']}", hint=_TOOLS_HINT)
            if t.role == "tool" and not self.supports.tool_results:
                raise TemplateError(f"message {k} is a tool result: the chat template does not render them")

    def describe(self) -> list[str]:
        """What eosguard reads off this template, in words."""
        lines = []
        for kind in KINDS:
            c = self.closers.get(kind)
            if c is None:
                lines.append(f"{KIND_NAMES[kind]}: {self.problems.get(kind)}")
                continue
            seq = "".join(c.sequence)
            how = " (the next turn's token: appended after a last reply)" if c.appended else ""
            lines.append(f"{KIND_NAMES[kind]} closed by {seq!r}; stop token {c.token!r} (id {c.id}){how}")
        prompt = self.render([{"role": "user", "content": "x"}], gen=True)
        lines.append(f"generation prompt ends with: {prompt[-40:]!r}")
        lines.append(f"assistant header tokens: {self.tokenizer.convert_ids_to_tokens(self.assistant_header_ids)}")
        s = self.supports
        lines.append(
            f"renders: reasoning {_yes(s.reasoning)}, tool calls {_yes(s.tool_calls)} (several a turn "
            f"{_yes(s.parallel_calls)}), tool results {_yes(s.tool_results)}, tools {_yes(s.tools)}"
        )
        if self.args:
            lines.append(f"template arguments: {self.args}")
        return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


_NO_EOS: dict[str, str] = {
    "hint": "use a template that closes every reply with a control token (e.g. template: chatml)",
    "finding": "template-no-eos",
}
_TOOLS_HINT = "use the model's own template with tool support, or leave tools out of the data"


def _block_pairs(markers: Markers) -> dict[str, str]:
    """Opening -> closing markers of tag pairs among the control tokens (`<think>` / `</think>`)."""
    out = {}
    for token, marker in markers.marker_of.items():
        m = re.fullmatch(r"<([A-Za-z_][\w-]*)>", token)
        if m and f"</{m.group(1)}>" in markers.marker_of:
            out[marker] = markers.marker_of[f"</{m.group(1)}>"]
    return out


def _text_blocks(source: str, markers: Markers) -> dict[str, str]:
    """Tag pairs the template writes as plain text (`<think>` / `</think>` where neither is a token)."""
    tags = set(re.findall(r"<(/?[A-Za-z_][\w-]*)>", source))
    return {
        f"<{tag}>": f"</{tag}>"
        for tag in sorted(tags)
        if not tag.startswith("/") and f"/{tag}" in tags and f"<{tag}>" not in markers.marker_of
    }


@functools.lru_cache(maxsize=32)
def _parsed_constants(source: str) -> frozenset[str]:
    """String constants a template compares content against (`'x' in content`, `.startswith('x')`, ...)."""
    import jinja2
    from jinja2 import nodes

    try:
        ast = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source)
    except jinja2.TemplateSyntaxError:
        return frozenset()
    found: set[str] = set()
    for node in ast.find_all(nodes.Compare):
        if any(op.op in ("in", "notin") for op in node.ops) and isinstance(node.expr, nodes.Const):
            found.add(str(node.expr.value))
    methods = {"split", "rsplit", "startswith", "endswith", "replace", "find", "rfind", "count", "index", "partition"}
    for node in ast.find_all(nodes.Call):
        if isinstance(node.node, nodes.Getattr) and node.node.attr in methods:
            found |= {str(a.value) for a in node.args if isinstance(a, nodes.Const) and isinstance(a.value, str)}
    for node in ast.find_all(nodes.Filter):
        if node.name == "replace":
            found |= {str(a.value) for a in node.args if isinstance(a, nodes.Const) and isinstance(a.value, str)}
    return frozenset(found)


def _content_tests(source: str, markers: Markers) -> frozenset[str]:
    """The constants that plain content could contain: those without a control token (content reaches the template
    with control-token text escaped, so a constant holding one can never match)."""
    return frozenset(c for c in _parsed_constants(source) if c and markers.mark(c) == c)


def require_fast(tokenizer: Any) -> None:
    """eosguard reads templates and offsets with the Rust `tokenizers` backend: a slow tokenizer is a clear error."""
    if not getattr(tokenizer, "is_fast", False):
        raise EosguardError("eosguard needs a fast (Rust `tokenizers`) tokenizer", hint="load it with use_fast=True")


def template_for(
    tokenizer: Any, args: Mapping[str, Any] | None = None, stops: Collection[int] | None = None
) -> ChatTemplate:
    """The tokenizer's template, or the ChatML eosguard would install when it has none and knows ChatML's tokens;
    stops: the ids the model is known to stop on (see `ChatTemplate`)."""
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplate(tokenizer, args=args, stops=stops)
    vocab = tokenizer.get_vocab()
    if all(t in vocab for t in CHATML_TOKENS):
        return ChatTemplate(tokenizer, chatml_template(None), args=args, stops=stops)
    return ChatTemplate(tokenizer)  # raises: no template


__all__ = ["KINDS", "ChatTemplate", "Closer", "TemplateError", "Turn", "template_for", "with_arguments"]
