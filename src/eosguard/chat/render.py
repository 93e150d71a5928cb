"""Rendering: one renderer turns a conversation into training examples (token ids and a mask), for any template.

This module is the single source of the token layout of training examples *and* generation prompts. It renders
with the tokenizer's own chat template (read by `eosguard.chat.templates.ChatTemplate`: Llama-3, Gemma, Qwen3, gpt-oss,
GLM, DeepSeek-R1, Mistral, SmolLM2, ..., ChatML when the tokenizer has none), so a Llama-3 fine-tune stays in
Llama-3 format, with the template's arguments (`enable_thinking`, ...) and the conversation's `tools`.

Which tokens are trained (mask = True): for each supervised reply, everything the model must write after the
generation prompt: its reasoning, its text or tool calls, **and the closing sequence that ends it** (`<|im_end|>`,
`<|eot_id|>`, `<end_of_turn>`, `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`, gpt-oss's `<|return|>` or `<|call|>`, ...
as the template writes it). Training on that stop token is the whole point of eosguard: it is the only way the
model learns to end its turn; a setup that masks it (pad == eos plus a collator that masks by id) gives a model that
rambles on and writes the user's next turn itself. Everything else is context: role headers (the generation prompt
supplies them), system, user and tool text, and what the template writes after the stop token.

A conversation is usually one example. A reply the template renders differently once later turns follow (reasoning
dropped from history, gpt-oss's `<|end|>`) is trained in an example of its own, as the model produces it at
inference (`eosguard.chat.placement`; `train_on: each` asks for one example per reply).

How the ids are made: the template's text (control tokens as private markers, `eosguard.chat.markers`) and the message
contents are joined into one string per example and encoded in one batched call by a copy of the tokenizer that
knows no added tokens but those markers. So content is always plain text - a user who types `<|im_end|>` gets the
text tokens of "<|im_end|>", never its id - and everything else is split exactly as the real tokenizer splits the
rendered text at its control tokens. One boundary is kept on purpose: where each generation prompt ends, so the
prompt is always a token prefix of the training example. For content without special-token text the ids equal
`tokenizer.apply_chat_template(messages, tokenize=True)`; the exception is a byte-level BPE tokenizer and a reply
that starts with whitespace it would merge with the header (tests pin both).

Two paths give the same examples: conversations of text (and reasoning) use layouts compiled once per shape
(`eosguard.chat.layouts`, no Jinja per conversation; the first of each shape are checked against the general path);
any other (tools, tool calls, tool results, content the template tests) is rendered through the template itself,
its content's control-token text escaped. Trained spans are placed by the marker tokens next to them where the
layout pins them, so the tokenizer's offset-free encoder serves; elsewhere by character offsets.

Run as:
    eosguard doctor --tokenizer PATH --data chats.jsonl --show 2   # rendered rows, trained tokens marked
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from eosguard.base.errors import EosguardError
from eosguard.chat.layouts import Layout, anchor, compile_layouts, marker_count
from eosguard.chat.markers import ANCHOR, DROP, SPLIT
from eosguard.chat.placement import plan
from eosguard.chat.settings import OverLength, TrainOn
from eosguard.chat.templates import ChatTemplate, TemplateError, Turn
from eosguard.data.conversations import Conversation, Message

IGNORE_INDEX = -100
"""Label value the loss ignores (PyTorch's CrossEntropyLoss default). Masks become labels in `labels_from_mask` only."""


@dataclass
class Rendered:
    """One training example as tokens.

    input_ids: the token ids; mask: True where the token is a training target; closings: per trained reply, the
    index of the first token of its closing sequence and of its stop token (the last token trained);
    own: a reply trained apart from the rest of its conversation; treated: replies after a reasoning block eosguard
    closed (see `eosguard.chat.templates`).
    """

    input_ids: np.ndarray
    mask: np.ndarray
    closings: list[tuple[int, int]] = field(default_factory=list)
    truncated: bool = False
    own: bool = False
    treated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def stop_positions(self) -> list[int]:
        """Indices of the stop tokens that close trained replies."""
        return [stop for _, stop in self.closings]

    @property
    def labels(self) -> list[int]:
        return labels_from_mask(self.input_ids, self.mask)

    def to_example(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids.tolist(), "labels": self.labels}


def labels_from_mask(input_ids: np.ndarray | Sequence[int], mask: np.ndarray | Sequence[bool]) -> list[int]:
    """The one place a training mask becomes labels: the token id where trained, IGNORE_INDEX elsewhere.

    Labels are decided by *position* (the mask), never by comparing ids with the pad or eos id.
    """
    return label_array(input_ids, mask).tolist()


def label_array(input_ids: np.ndarray | Sequence[int], mask: np.ndarray | Sequence[bool]) -> np.ndarray:
    """`labels_from_mask` as an array of the ids' own integer type (for whole columns at once)."""
    ids = np.asarray(input_ids)
    return np.where(np.asarray(mask, dtype=bool), ids, np.asarray(IGNORE_INDEX, dtype=ids.dtype))


def _messages(conv: Conversation | Sequence[Message]) -> tuple[Message, ...]:
    return conv.messages if isinstance(conv, Conversation) else tuple(conv)


def turns_of(messages: Sequence[Message]) -> list[Turn]:
    """What the template reader needs of each message."""
    return [Turn(m.role, "tool_call" if m.tool_calls else "reply", m.reasoning) for m in messages]


class _Marked(NamedTuple):
    """One example as marked text: per trained reply (start, closing, stop) character positions (the first
    trained character, the first marker of the closing sequence, the stop token's marker); anchors when the layout
    pins every position by markers."""

    text: str
    spans: list[tuple[int, int, int]]
    anchors: _Anchors | None
    own: bool
    treated: int


class _Anchors(NamedTuple):
    """A layout's trained positions as `eosguard.chat.layouts.anchor` positions, with its count of marker tokens."""

    markers: int
    spans: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]


class ChatRenderer:
    """Render conversations to training examples (input_ids, mask) with a tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face fast tokenizer with a chat template (see
            `eosguard.chat.tokenizer_setup.prepare_tokenizer`, which installs ChatML where there is none).
        template: the read template; default: `ChatTemplate(tokenizer, args=template_args)`.
        train_on: "all" supervises every assistant turn; "last" only the last one; "each" every one, each in an
            example of its own. A message with `train=False` is never supervised, one with `train=True` always is.
        tools: function schemas offered in conversations that bring none of their own.
        template_args: template arguments (`enable_thinking`, ...), when `template` is not given.
        verify: check the first `verify` conversations of each shape against the template's own rendering.

    Example:
        >>> from eosguard.data.conversations import conversation
        >>> from eosguard.testing.fixtures import demo_tokenizer
        >>> r = ChatRenderer(demo_tokenizer())
        >>> (out,) = r.render(conversation(("user", "Hi"), ("assistant", "Hello")))
        >>> r.tokenizer.decode(out.input_ids[out.mask])
        'Hello<|im_end|>'
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        template: ChatTemplate | None = None,
        train_on: TrainOn = "all",
        tools: Sequence[dict[str, Any]] | None = None,
        template_args: dict[str, Any] | None = None,
        verify: int = 4,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate(tokenizer, args=template_args)
        self.end_of_turn, self.end_of_turn_id = self.template.require_end_of_turn()
        self.stop_ids = self.template.stop_ids
        self.train_on = train_on
        self.tools = tuple(tools) if tools else None
        self.verify = verify
        self._verified: dict[Any, int] = {}
        self._layouts: dict[Any, list[tuple[Layout, _Anchors | None]]] = {}

    # -- text ---------------------------------------------------------------------------------------------------

    def supervised(self, messages: Sequence[Message]) -> list[int]:
        """Indices of the replies that are training targets, under the run's policy and per-message overrides."""
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        out = []
        for i, m in enumerate(messages):
            if m.role != "assistant":
                continue
            if m.train if m.train is not None else self.train_on != "last" or i == last_assistant:
                out.append(i)
        return out

    def _tools(self, conv: Conversation | Sequence[Message]) -> tuple[dict[str, Any], ...] | None:
        own = conv.tools if isinstance(conv, Conversation) else None
        return own or self.tools

    def split_calls(self, conv: Conversation | Sequence[Message]) -> tuple[tuple[Message, ...], int]:
        """The conversation's messages with each turn of several tool calls split into one assistant message per
        call, where the template renders one call per turn (gpt-oss: harmony writes each call as its own message),
        and how many turns were split; as they are elsewhere."""
        messages = _messages(conv)
        t = self.template
        if t.supports.parallel_calls or "tool_call" not in t.closers or all(len(m.tool_calls) < 2 for m in messages):
            return messages, 0
        out: list[Message] = []
        for m in messages:
            out.append(replace(m, tool_calls=m.tool_calls[:1]) if len(m.tool_calls) > 1 else m)
            out += [replace(m, content="", reasoning=None, tool_calls=(c,)) for c in m.tool_calls[1:]]
        return tuple(out), sum(len(m.tool_calls) > 1 for m in messages)

    def marked(self, conv: Conversation | Sequence[Message]) -> list[_Marked]:
        """The examples of one conversation as marked text with their trained positions."""
        messages, _ = self.split_calls(conv)
        try:
            fast = self._compiled(conv, messages)
            if fast is None:
                return self._general(conv, messages)
            key, marked = fast
            if self._verified.get(key, 0) < self.verify:
                self._verified[key] = self._verified.get(key, 0) + 1
                self._check_against_template(marked, self._general(conv, messages))
            return marked
        except TemplateError as exc:
            raise _located(exc, conv) from None

    def _general(self, conv: Any, messages: Sequence[Message]) -> list[_Marked]:
        """Any conversation, rendered through the template (content's control-token text escaped)."""
        t, esc = self.template, self.template.markers.escape
        msgs = [esc(m.as_dict()) for m in messages]
        tools = self._tools(conv)
        tools_in = esc(list(tools)) if tools else None
        turns = [Turn(u.role, u.kind, None if u.reasoning is None else esc(u.reasoning)) for u in turns_of(messages)]
        t.check_turns(turns, tools=bool(tools))
        rendered: dict[tuple[int, bool], str] = {}

        def render(k: int, gen: bool) -> str:
            if (k, gen) not in rendered:
                rendered[k, gen] = t.render_marked(msgs[:k], tools_in, gen)
            return rendered[k, gen]

        def anchored(n: int, gen: bool, at: int) -> tuple[str, int]:
            tagged = [
                *msgs[:at],
                {**msgs[at], "content": f"{msgs[at].get('content') or ''}{ANCHOR}"},
                *msgs[at + 1 : n],
            ]
            text = t.render_marked(tagged, tools_in, gen)
            found = text.rfind(ANCHOR)
            return (text[:found] + text[found + 1 :], found) if found >= 0 else (text, -1)

        out = []
        examples = plan(t, render, turns, self.supervised(messages), each=self.train_on == "each", anchored=anchored)
        for ex in examples:
            text, moved = t.markers.unescape(ex.text, [p for span in ex.spans for p in span])
            spans = [tuple(moved[i : i + 3]) for i in range(0, len(moved), 3)]
            out.append(_Marked(text, spans, None, ex.own, ex.treated))  # type: ignore[arg-type]
        return out

    def _compiled(self, conv: Any, messages: Sequence[Message]) -> tuple[Any, list[_Marked]] | None:
        """Plain conversations through the layouts of their shape (None: this one needs the general path)."""
        if self._tools(conv) or not all(m.role != "tool" and not m.tool_calls for m in messages):
            return None
        tests = self.template.content_tests
        if tests and any(c in text for m in messages for text in (m.content, m.reasoning or "") for c in tests):
            return None
        supervised = self.supervised(messages)
        key = (tuple((m.role, m.reasoning is not None) for m in messages), tuple(supervised), self.train_on == "each")
        if key not in self._layouts:
            turns = [Turn(m.role, "reply", "" if m.reasoning is not None else None) for m in messages]
            self.template.check_turns(turns, tools=False)
            layouts = compile_layouts(self.template, turns, supervised, each=self.train_on == "each")
            self._layouts[key] = [(lay, self._anchored(lay)) for lay in layouts]
        values = {}
        for i, m in enumerate(messages):
            values[2 * i] = m.content
            if m.reasoning is not None:
                values[2 * i + 1] = m.reasoning
        out = []
        for lay, anchors in self._layouts[key]:
            text, starts = lay.assemble(values)
            out.append(_Marked(text, lay.char_spans(starts), anchors, lay.own, lay.treated))
        return key, out

    def _anchored(self, layout: Layout) -> _Anchors | None:
        """The layout's trained positions as marker anchors, or None if any needs character offsets."""
        spans = [tuple(anchor(self.template, layout, at) for at in span) for span in layout.spans]
        if any(a is None for span in spans for a in span):
            return None
        return _Anchors(marker_count(self.template, layout), spans)  # type: ignore[arg-type]

    def _check_against_template(self, ours: list[_Marked], theirs: list[_Marked]) -> None:
        for a, b in zip(ours, theirs, strict=False):
            if a.text != b.text or a.spans != b.spans:
                at = next((i for i, (x, y) in enumerate(zip(a.text, b.text, strict=False)) if x != y), None)
                if at is None:
                    at = min(len(a.text), len(b.text))
                decode = self.template.decode_marked
                raise TemplateError(
                    "the chat template renders this conversation differently from the layout eosguard read off it "
                    f"(it branches on content): at character {at}, template {decode(b.text[at : at + 40])!r}, "
                    f"eosguard {decode(a.text[at : at + 40])!r}",
                    hint="use template: chatml, or a template that writes content as it is",
                )
        if len(ours) != len(theirs):
            raise TemplateError("the chat template splits this conversation differently from its layout")

    def render_text(self, messages: Sequence[Message] | Conversation, *, add_generation_prompt: bool = False) -> str:
        """The text the model sees (control tokens written out), e.g. for display."""
        if add_generation_prompt:
            return self.template.decode_marked(self._prompt_text(messages))
        return "".join(self.template.decode_marked(m.text) for m in self.marked(messages))

    # -- tokens -------------------------------------------------------------------------------------------------

    def render_batch(self, convs: Sequence[Conversation | Sequence[Message]]) -> list[list[Rendered]]:
        """The examples of many conversations, encoded in one batched call (the fast path for data preparation)."""
        marked = [self.marked(c) for c in convs]
        flat = [m for ms in marked for m in ms]
        # Positions pinned by markers need no character offsets: those texts take the tokenizer's faster
        # offset-free encoder (~25% less time); the others are encoded with offsets.
        by_markers = [i for i, m in enumerate(flat) if m.anchors is not None]
        by_chars = [i for i, m in enumerate(flat) if m.anchors is None]
        plain = self.template.markers.plain
        encodings: list[Any] = [None] * len(flat)
        fast = plain.encode_batch_fast([flat[i].text for i in by_markers], add_special_tokens=False)
        full = plain.encode_batch([flat[i].text for i in by_chars], add_special_tokens=False)
        for i, enc in [*zip(by_markers, fast, strict=True), *zip(by_chars, full, strict=True)]:
            encodings[i] = enc
        done = iter(self._to_rendered(enc, m) for enc, m in zip(encodings, flat, strict=True))
        return [[next(done) for _ in ms] for ms in marked]

    def render(self, conv: Conversation | Sequence[Message]) -> list[Rendered]:
        """The examples of one conversation (one, unless the template rewrites a reply in history)."""
        return self.render_batch([conv])[0]

    def examples(self, convs: Sequence[Conversation | Sequence[Message]]) -> list[Rendered]:
        """The examples of many conversations, in order, as one list (no length policy: see
        `eosguard.chat.examples.build_examples`)."""
        return [r for rs in self.render_batch(convs) for r in rs]

    def _to_rendered(self, enc: Any, m: _Marked) -> Rendered:
        markers = self.template.markers
        raw = np.asarray(enc.ids, dtype=np.int64)
        ids = markers.id_map[raw]
        located = None if m.anchors is None else _locate_by_markers(markers.is_marker[raw], m.anchors)
        if located is None and m.anchors is not None:  # never seen: markers not one token each; use offsets
            enc = markers.plain.encode(m.text, add_special_tokens=False)
        if located is None:
            located = _locate_by_chars(enc, m.spans, len(ids))
        if located is None:
            raise TemplateError("a trained reply starts or ends inside a token: the tokenizer merges across it")
        mask, closings = located
        keep = ids != DROP
        if not keep.all():  # drop the split markers; positions move back by the markers before them
            dropped_before = np.concatenate([[0], np.cumsum(~keep)])
            ids, mask = ids[keep], mask[keep]
            closings = [(a - int(dropped_before[a]), b - int(dropped_before[b])) for a, b in closings]
        return Rendered(input_ids=ids, mask=mask, closings=closings, own=m.own, treated=m.treated)

    def _prompt_text(self, messages: Sequence[Message] | Conversation, tools: Sequence[Any] | None = None) -> str:
        """Marked text of the generation prompt after `messages`: the template's own, content escaped, split before
        each earlier reply where training splits it (see `_as_trained`)."""
        t = self.template
        offered = tools or self._tools(messages)
        history = self.split_calls(messages)[0]
        try:
            text = t.render_marked(
                [t.markers.escape(m.as_dict()) for m in history],
                t.markers.escape(list(offered)) if offered else None,
                gen=True,
            )
        except TemplateError as exc:
            raise _located(exc, messages) from None
        return self._as_trained(history, t.markers.unescape(text)[0], offered)

    def _as_trained(self, history: Sequence[Message], prompt: str, tools: Sequence[Any] | None) -> str:
        """`prompt` as training writes the text before a reply that follows `history`: with a SPLIT before each
        earlier reply trained in the same example (so a reply that opens with whitespace is not merged into its
        header in the prompt when it was not in training), where that text is the prompt's; else `prompt`.

        Training splits each trained reply from its header, as the model sees the header alone when it generates;
        without the same splits, the ids of a multi-turn prompt would not be the ids training put before its reply.
        """
        if not any(m.role == "assistant" for m in history):
            return prompt
        following = Conversation((*history, Message("assistant", "x")), tools=tuple(tools) if tools else None)
        try:
            examples = self.marked(following)
        except TemplateError:
            return prompt
        if not examples or not examples[-1].spans:
            return prompt
        text, spans = examples[-1].text, examples[-1].spans  # the example of the last reply comes last
        before = text[: spans[-1][0]].rstrip(SPLIT)
        return before if before.replace(SPLIT, "") == prompt.replace(SPLIT, "") else prompt

    def prompt_ids(
        self, messages: Sequence[Message] | Conversation, *, tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Ids of a generation prompt: the messages, then the template's generation prompt (nothing trained).
        tools: the schemas offered (default: a Conversation's own, else the renderer's)."""
        return self.template.encode_marked([self._prompt_text(messages, tools)])[0]


def __getattr__(name: str) -> Any:
    """`ChatMLRenderer`, eosguard 0.1's name, still imports, with a DeprecationWarning: it is `ChatRenderer`, which
    renders the tokenizer's own template (ChatML only where the tokenizer has none)."""
    if name == "ChatMLRenderer":
        import warnings

        warnings.warn(
            "ChatMLRenderer is ChatRenderer, which renders the tokenizer's own chat template (not only ChatML): "
            "use ChatRenderer",
            DeprecationWarning,
            stacklevel=2,
        )
        return ChatRenderer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _located(exc: TemplateError, conv: Any) -> TemplateError:
    """The same error, prefixed with the conversation's file and line when it came from a file."""
    line = getattr(conv, "line", None)
    if line is None:
        return exc
    return TemplateError(f"{conv.source}:{line}: {exc.message}", hint=exc.hint, finding=exc.finding)


def _locate_by_markers(is_marker: np.ndarray, anchors: _Anchors) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """Mask and closings from where the marker tokens sit (no offsets); None if the markers do not add up.

    Same positions as `_locate_by_chars`: a span starts at the token after its SPLIT and ends with its stop token.
    """
    marks = np.flatnonzero(is_marker)
    if len(marks) != anchors.markers:
        return None
    n = len(is_marker)

    def pos(a: tuple[int, int]) -> int:
        k, d = a
        return n if k < 0 else int(marks[k]) + d

    mask = np.zeros(n, dtype=bool)
    closings = []
    for start, closing, stop in anchors.spans:
        mask[pos(start) : pos(stop) + 1] = True
        closings.append((pos(closing), pos(stop)))
    return mask, closings


def _locate_by_chars(
    enc: Any, spans: list[tuple[int, int, int]], n: int
) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """Mask and closings from a few char -> token lookups per reply (no per-token Python work): a token is
    trained when its first character lies in a trained span."""
    mask = np.zeros(n, dtype=bool)
    closings = []
    for start, closing, stop in spans:
        first, last = enc.char_to_token(start), enc.char_to_token(stop)
        close = enc.char_to_token(closing)
        if first is None or last is None or close is None:
            return None
        if enc.token_to_chars(first)[0] < start:  # the token began in the role header: not a target
            first += 1
        mask[first : last + 1] = True
        closings.append((close, last))
    return mask, closings


# -- over-length policy ---------------------------------------------------------------------------------------


class OverLengthError(EosguardError):
    """An example is longer than max_length under the `error` policy."""


def fit_to_length(r: Rendered, max_length: int, policy: OverLength) -> Rendered | None:
    """Make an example fit `max_length` without ever leaving a supervised turn without its end-of-turn token.

    - drop: return None (the caller counts it).
    - truncate: keep whole replies through the last stop token that fits; if not even the first trained reply
      fits, cut it and close it with its trained closing sequence (so the model still learns to stop). Returns None
      when not even the prompt before the first trained reply fits.
    - error: raise OverLengthError.
    """
    n = len(r)
    if n <= max_length:
        return r
    if policy == "drop":
        return None
    if policy == "error":
        raise OverLengthError(
            f"example of {n} tokens is longer than max_length={max_length}",
            hint="over_length: truncate (keeps every kept turn's stop token) or drop, or a larger max_length",
        )
    cut = max((stop + 1 for stop in r.stop_positions if stop < max_length), default=0)
    if cut:  # whole replies through the last stop token that fits
        return _slice(r, cut)
    return _cut_inside_turn(r, max_length)


def _slice(r: Rendered, cut: int) -> Rendered:
    return Rendered(
        input_ids=r.input_ids[:cut],
        mask=r.mask[:cut],
        closings=[c for c in r.closings if c[1] < cut],
        truncated=True,
        own=r.own,
        treated=r.treated,
    )


def _cut_inside_turn(r: Rendered, max_length: int) -> Rendered | None:
    """Cut the first trained reply so that it plus its whole closing sequence ends at max_length."""
    if not r.closings:
        return None
    closing, stop = r.closings[0]
    tail = r.input_ids[closing : stop + 1]
    trained = np.flatnonzero(r.mask[:closing])
    first = int(trained[0]) if len(trained) else closing
    keep = max_length - len(tail)
    if first + 1 > keep:  # need at least one trained token before the closing sequence
        return None
    ids = np.concatenate([r.input_ids[:keep], tail])
    mask = np.concatenate([r.mask[:keep], np.ones(len(tail), dtype=bool)])
    return Rendered(ids, mask, [(keep, max_length - 1)], truncated=True, own=r.own, treated=r.treated)
