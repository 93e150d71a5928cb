"""Rendering: one renderer turns a conversation into token ids and a training mask, for any chat template.

This module is the single source of the token layout of training examples *and* generation prompts. It renders
with the tokenizer's own chat template (read by `eosguard.templates.ChatTemplate`: Llama-3, Gemma, Phi-3,
Mistral, Qwen, SmolLM2, ..., ChatML when the tokenizer has none), so a Llama-3 fine-tune stays in Llama-3 format.

Which tokens are trained (mask = True): for each supervised assistant turn, everything the model must write after
the generation prompt: the reply **and the end-of-turn token that closes it** (`<|im_end|>`, `<|eot_id|>`,
`<end_of_turn>`, `<|end|>`, `</s>`, ... as the template writes it). Training on that stop token is the whole
point of eosguard: it is the only way the model learns to end its turn; a setup that masks it (pad == eos plus a
collator that masks by id) gives a model that rambles on and writes the user's next turn itself. Everything else is
context: role headers (the generation prompt supplies them), system and user text, and whatever the template writes
after the end-of-turn token (a newline, Phi-3's closing eos): generation stops at the end-of-turn token.

How the ids are made: the template's fixed text (control tokens as private markers) and the message contents
(verbatim, trimmed only where the template trims) are joined into one string per conversation and encoded in one
batched call by a copy of the tokenizer that knows no added tokens but those markers. So content is always plain
text - a user who types `<|im_end|>` gets the text tokens of "<|im_end|>", never its id - and everything else is
split exactly as the real tokenizer splits the rendered text at its control tokens. One boundary is kept on purpose:
where each generation prompt ends, so the prompt is always a token prefix of the training example. For content
without special-token text the ids equal `tokenizer.apply_chat_template(messages, tokenize=True)`; the exception is a
byte-level BPE tokenizer and a reply that starts with whitespace it would merge with the header (tests pin both).
The first conversations of each role sequence are checked against the template's own rendering, text for text.
Trained spans and message ends are placed by the marker tokens next to them (each marker is exactly one token), so
the tokenizer's offset-free encoder serves; a layout whose positions no marker pins is placed by character offsets.

Run as:
    python -m eosguard.render   # prints a rendered example with its trained tokens, using the demo tokenizer
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from eosguard.conversations import Conversation, Message
from eosguard.errors import EosguardError
from eosguard.templates import DROP, ChatTemplate, Layout, TemplateError

IGNORE_INDEX = -100
"""Label value the loss ignores (PyTorch's CrossEntropyLoss default). Masks become labels in `labels_from_mask` only."""

TrainOn = Literal["all", "last"]
OverLength = Literal["drop", "truncate", "error"]


@dataclass
class Rendered:
    """One conversation as tokens.

    input_ids: the token ids; mask: True where the token is a training target;
    message_ends: for each message, the token index just past it, for turn-aligned truncation;
    stop_positions: indices of the end-of-turn tokens that close supervised assistant turns.
    """

    input_ids: np.ndarray
    mask: np.ndarray
    message_ends: list[int] = field(default_factory=list)
    stop_positions: list[int] = field(default_factory=list)
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

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


class ChatRenderer:
    """Render conversations to (input_ids, mask) with a tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face fast tokenizer with a chat template (see
            `eosguard.tokenizer_setup.prepare_tokenizer`, which installs ChatML where there is none).
        template: the split template; default: `ChatTemplate(tokenizer)`.
        train_on: "all" supervises every assistant turn; "last" only the last one. A message with
            `train=False` is never supervised, one with `train=True` always is.
        verify: check the first `verify` conversations of each role sequence against the template's own text.

    Example:
        >>> from eosguard.conversations import conversation
        >>> from eosguard.fixtures import demo_tokenizer
        >>> r = ChatRenderer(demo_tokenizer())
        >>> out = r.render(conversation(("user", "Hi"), ("assistant", "Hello")))
        >>> r.tokenizer.decode(out.input_ids[out.mask])
        'Hello<|im_end|>'
    """

    def __init__(
        self, tokenizer: Any, *, template: ChatTemplate | None = None, train_on: TrainOn = "all", verify: int = 4
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate(tokenizer)
        self.end_of_turn, self.end_of_turn_id = self.template.require_end_of_turn()
        self.train_on = train_on
        self.verify = verify
        self._verified: dict[tuple[str, ...], int] = {}
        self._anchors: dict[tuple[tuple[str, ...], tuple[bool, ...]], _Anchors | None] = {}

    # -- text ---------------------------------------------------------------------------------------------------

    def _supervised(self, messages: Sequence[Message]) -> list[bool]:
        """Which messages are training targets, under the run's policy and per-message overrides."""
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        out = []
        for i, m in enumerate(messages):
            if m.role != "assistant":
                out.append(False)
            elif m.train is not None:
                out.append(m.train)
            else:
                out.append(self.train_on == "all" or i == last_assistant)
        return out

    def marked_text(self, conv: Conversation | Sequence[Message]) -> tuple[str, list[tuple[int, int]], list[int]]:
        """The rendered string (control tokens as markers), the trained char spans, and each message's end.

        A trained span runs from the end of a reply's generation prompt through its end-of-turn marker.
        """
        return self._marked(conv)[:3]

    def _marked(self, conv: Conversation | Sequence[Message]) -> _Marked:
        messages = _messages(conv)
        roles = tuple(m.role for m in messages)
        supervised = tuple(self._supervised(messages))
        try:
            layout = self.template.layout(roles)
            text, starts = layout.assemble([m.content for m in messages])
            replies = [self.template.reply_span(layout, k) for k, trained in enumerate(supervised) if trained]
        except TemplateError as exc:
            raise _located(exc, conv) from None
        spans = [(starts[pj] + po + 1, starts[cj] + co + 1) for (pj, po), (cj, co) in replies]  # past SPLIT / marker
        ends = [starts[j] + o for j, o in layout.ends]
        if self._verified.get(roles, 0) < self.verify:
            self._verified[roles] = self._verified.get(roles, 0) + 1
            self._check_against_template(conv, messages, text)
        key = (roles, supervised)
        if key not in self._anchors:
            self._anchors[key] = self._anchored(layout, replies)
        return _Marked(text, spans, ends, self._anchors[key])

    def _anchored(self, layout: Layout, replies: list[tuple[tuple[int, int], tuple[int, int]]]) -> _Anchors | None:
        """The layout's trained spans and message ends as marker anchors, or None if any needs character offsets."""
        t = self.template
        spans = [(t.anchor(layout, (pj, po + 1)), t.anchor(layout, (cj, co))) for (pj, po), (cj, co) in replies]
        ends = [t.anchor(layout, at) for at in layout.ends]
        if any(a is None for span in spans for a in span) or any(a is None for a in ends):
            return None
        return _Anchors(markers=t.marker_count(layout), spans=spans, ends=ends)  # type: ignore[arg-type]

    def _check_against_template(self, conv: Any, messages: Sequence[Message], marked: str) -> None:
        ours = self.template.decode_marked(marked)
        theirs = self.template.render_messages([{"role": m.role, "content": m.content} for m in messages])
        if ours != theirs:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
            )
            raise _located(
                TemplateError(
                    "the chat template renders this conversation differently from the layout eosguard read off it "
                    f"(it branches on content): at character {at}, template {theirs[at : at + 40]!r}, eosguard "
                    f"{ours[at : at + 40]!r}",
                    hint="use template: chatml, or a template that writes content as it is",
                ),
                conv,
            )

    def render_text(self, messages: Sequence[Message] | Conversation, *, add_generation_prompt: bool = False) -> str:
        """The text the model sees (control tokens written out), e.g. for display."""
        if add_generation_prompt:
            return self.template.decode_marked(self._prompt_text(_messages(messages)))
        return self.template.decode_marked(self.marked_text(messages)[0])

    # -- tokens -------------------------------------------------------------------------------------------------

    def render_batch(self, convs: Sequence[Conversation | Sequence[Message]]) -> list[Rendered]:
        """Render many conversations with one batched encoder call (the fast path for data preparation)."""
        marked = [self._marked(c) for c in convs]
        # Positions pinned by markers need no character offsets: those texts take the tokenizer's faster
        # offset-free encoder (~25% less time); the others are encoded with offsets.
        by_markers = [i for i, m in enumerate(marked) if m.anchors is not None]
        by_chars = [i for i, m in enumerate(marked) if m.anchors is None]
        plain = self.template.plain
        encodings: list[Any] = [None] * len(marked)
        fast = plain.encode_batch_fast([marked[i].text for i in by_markers], add_special_tokens=False)
        full = plain.encode_batch([marked[i].text for i in by_chars], add_special_tokens=False)
        for i, enc in [*zip(by_markers, fast, strict=True), *zip(by_chars, full, strict=True)]:
            encodings[i] = enc
        return [self._to_rendered(enc, m) for enc, m in zip(encodings, marked, strict=True)]

    def render(self, conv: Conversation | Sequence[Message]) -> Rendered:
        return self.render_batch([conv])[0]

    def _to_rendered(self, enc: Any, m: _Marked) -> Rendered:
        raw = np.asarray(enc.ids, dtype=np.int64)
        ids = self.template.id_map[raw]
        located = None if m.anchors is None else _locate_by_markers(self.template.is_marker[raw], m.anchors)
        if located is None and m.anchors is not None:  # never seen: markers not one token each; use offsets
            enc = self.template.plain.encode(m.text, add_special_tokens=False)
        if located is None:
            located = _locate_by_chars(enc, m.spans, m.ends, len(ids), len(m.text))
        if located is None:  # a span edge no token covers (rare normalizers): fall back to every token's offset
            starts = np.asarray([o[0] for o in enc.offsets], dtype=np.int64).reshape(-1)
            mask = _mask_from_spans(starts, m.spans)
            message_ends = np.searchsorted(starts, np.asarray(m.ends), side="left").tolist()
        else:
            mask, message_ends = located
        keep = ids != DROP
        if not keep.all():  # drop the split markers; message ends move back by the markers before them
            dropped_before = np.concatenate([[0], np.cumsum(~keep)])
            ids, mask = ids[keep], mask[keep]
            message_ends = [e - int(dropped_before[e]) for e in message_ends]
        stops = np.flatnonzero(mask & (ids == self.end_of_turn_id)).tolist()
        return Rendered(input_ids=ids, mask=mask, message_ends=message_ends, stop_positions=stops)

    def _prompt_text(self, messages: Sequence[Message]) -> str:
        """Marked text of the generation prompt after `messages`: the training layout cut where a reply begins."""
        roles = (*(m.role for m in messages), "assistant")
        try:
            layout = self.template.layout(roles)
            (pj, po), _ = self.template.reply_span(layout, len(messages))
        except TemplateError as exc:
            raise _located(exc, messages) from None
        text, starts = layout.assemble([*(m.content for m in messages), "x"])
        return text[: starts[pj] + po]

    def prompt_ids(self, messages: Sequence[Message] | Conversation) -> list[int]:
        """Ids of a generation prompt: the messages, then the template's generation prompt (nothing trained)."""
        return self.template.encode_marked([self._prompt_text(_messages(messages))])[0]


ChatMLRenderer = ChatRenderer
"""The old name, kept for code written against eosguard 0.1 (it rendered ChatML only)."""


def _located(exc: TemplateError, conv: Any) -> TemplateError:
    """The same error, prefixed with the conversation's file and line when it came from a file."""
    line = getattr(conv, "line", None)
    if line is None:
        return exc
    return TemplateError(f"{conv.source}:{line}: {exc.message}", hint=exc.hint)


class _Anchors(NamedTuple):
    """A layout's trained spans (start, closer) and message ends as `ChatTemplate.anchor` positions."""

    markers: int
    spans: list[tuple[tuple[int, int], tuple[int, int]]]
    ends: list[tuple[int, int]]


class _Marked(NamedTuple):
    text: str
    spans: list[tuple[int, int]]
    ends: list[int]
    anchors: _Anchors | None


def _locate_by_markers(is_marker: np.ndarray, anchors: _Anchors) -> tuple[np.ndarray, list[int]] | None:
    """Mask and message ends from where the marker tokens sit (no offsets); None if the markers do not add up.

    Same positions as `_locate_by_chars`: a span starts at the token after its SPLIT and ends with its closer.
    """
    marks = np.flatnonzero(is_marker)
    if len(marks) != anchors.markers:
        return None
    n = len(is_marker)

    def pos(anchor: tuple[int, int]) -> int:
        k, d = anchor
        return n if k < 0 else int(marks[k]) + d

    mask = np.zeros(n, dtype=bool)
    for start, closer in anchors.spans:
        mask[pos(start) : pos(closer) + 1] = True
    return mask, [pos(a) for a in anchors.ends]


def _locate_by_chars(
    enc: Any, spans: list[tuple[int, int]], ends: list[int], n: int, text_len: int
) -> tuple[np.ndarray, list[int]] | None:
    """Mask and message ends from a few char -> token lookups per message (no per-token Python work).

    Same rule as `_mask_from_spans`: a token is trained when its first character lies in a trained span.
    """
    mask = np.zeros(n, dtype=bool)
    for start, stop in spans:
        first, last = enc.char_to_token(start), enc.char_to_token(stop - 1)
        if first is None or last is None:
            return None
        if enc.token_to_chars(first)[0] < start:  # the token began in the role header: not a target
            first += 1
        mask[first : last + 1] = True
    message_ends = []
    for end in ends:
        token = enc.char_to_token(end) if end < text_len else n
        if token is None:
            return None
        message_ends.append(token)
    return mask, message_ends


def _mask_from_spans(starts: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for tokens whose first character lies in a trained span (spans are sorted and disjoint).

    A token that starts in the role header and runs into the content (possible with byte-level BPE when the
    content starts with whitespace) is *not* trained: the prompt at inference ends with the header, so the model
    must learn the content's tokens as they follow it.
    """
    if not spans:
        return np.zeros(len(starts), dtype=bool)
    lo = np.asarray([s for s, _ in spans])
    hi = np.asarray([e for _, e in spans])
    k = np.searchsorted(lo, starts, side="right") - 1
    return (k >= 0) & (starts < hi[np.clip(k, 0, None)])


# -- over-length policy ---------------------------------------------------------------------------------------


class OverLengthError(EosguardError):
    """An example is longer than max_length under the `error` policy."""


def fit_to_length(r: Rendered, max_length: int, policy: OverLength) -> Rendered | None:
    """Make an example fit `max_length` without ever leaving a supervised turn without its end-of-turn token.

    - drop: return None (the caller counts it).
    - truncate: keep whole messages up to the last one that fits; if not even the first supervised assistant
      turn fits, cut its content and close it with a trained end-of-turn token (so the model still learns to stop).
      Returns None when not even the prompt before the first supervised turn fits.
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
    fitting = [e for e in r.message_ends if e <= max_length]
    cut = max(fitting, default=0)
    if any(p < cut for p in r.stop_positions):
        return _slice(r, cut)
    return _cut_inside_turn(r, max_length)


def _slice(r: Rendered, cut: int) -> Rendered:
    return Rendered(
        input_ids=r.input_ids[:cut],
        mask=r.mask[:cut],
        message_ends=[e for e in r.message_ends if e <= cut],
        stop_positions=[p for p in r.stop_positions if p < cut],
        truncated=True,
    )


def _cut_inside_turn(r: Rendered, max_length: int) -> Rendered | None:
    """Cut the first supervised turn's content so that it plus its end-of-turn token ends at max_length."""
    if not r.stop_positions:
        return None
    stop = r.stop_positions[0]
    trained = np.flatnonzero(r.mask[:stop])
    first = int(trained[0]) if len(trained) else stop
    if first + 1 > max_length - 1:  # need at least one content token and the stop token
        return None
    ids = np.concatenate([r.input_ids[: max_length - 1], r.input_ids[stop : stop + 1]])
    mask = np.concatenate([r.mask[: max_length - 1], np.ones(1, dtype=bool)])
    return Rendered(input_ids=ids, mask=mask, message_ends=[], stop_positions=[max_length - 1], truncated=True)


if __name__ == "__main__":
    from eosguard.conversations import conversation
    from eosguard.fixtures import demo_tokenizer

    renderer = ChatRenderer(demo_tokenizer())
    conv = conversation(("system", "Be brief."), ("user", "Say hi <|im_end|>"), ("assistant", "Hi!"))
    out = renderer.render(conv)
    print(renderer.render_text(conv.messages))
    for tok_id, trained in zip(out.input_ids.tolist(), out.mask.tolist(), strict=True):
        print(f"{'*' if trained else ' '} {tok_id:6d} {renderer.tokenizer.convert_ids_to_tokens(tok_id)!r}")
