"""Compiled layouts: the renderer's fast path for conversations of text (and reasoning), one template run per shape.

For a conversation of plain turns, `eosguard.chat.placement.plan` is run once per *shape* (its roles, which replies
carry reasoning, which are trained) on a skeleton whose contents are slots, and its examples are kept as fixed pieces of
marked text around the slots (`Layout`). A conversation of that shape is then one string join per example, with no Jinja
at all. What the template strips from a content (Llama-3 and Gemma trim it) is read by planning once more with
whitespace around every slot. The renderer checks the first conversations of each shape against the template itself, and
sends a conversation whose text the template tests (`ChatTemplate.content_tests`) down the general path.

Trained positions are kept as marker anchors where the markers pin them, so the tokenizer's offset-free encoder
serves (`anchor`): each marker is exactly one token, so "the token after the k-th marker" needs no offsets.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eosguard.chat.markers import SLOT, slot
from eosguard.chat.placement import Example, plan
from eosguard.chat.templates import ChatTemplate, TemplateError, Turn

Strip = tuple[bool, str | None]  # (apply, chars): str.lstrip/rstrip(chars) when apply; chars None = whitespace
Position = tuple[int, int]  # (piece index, offset in piece)
_PAD_LEFT, _PAD_RIGHT = "\n \t", "\t \n"  # padding around placeholders, to see what the template strips


@dataclass
class Layout:
    """One example of a conversation shape: fixed marked text (`pieces`) around content slots (`order`: the slot
    number of each gap; message i's content is slot 2i, its reasoning 2i + 1), what the template strips from each
    slot, and the trained replies' (start, closing, end) positions."""

    pieces: list[str]
    order: list[int]
    strips: dict[int, tuple[Strip, Strip]]
    spans: list[tuple[Position, Position, Position]]
    replies: list[int]
    own: bool
    treated: int

    def assemble(self, values: Mapping[int, str]) -> tuple[str, list[int]]:
        """The marked text for these slot values, and the start offset of each piece in it."""
        parts: list[str] = []
        starts: list[int] = []
        pos = 0
        for j, piece in enumerate(self.pieces):
            starts.append(pos)
            parts.append(piece)
            pos += len(piece)
            if j < len(self.order):
                value = _apply_strip(values[self.order[j]], self.strips[self.order[j]])
                parts.append(value)
                pos += len(value)
        return "".join(parts), starts

    def char_spans(self, starts: Sequence[int]) -> list[tuple[int, int, int]]:
        return [tuple(starts[j] + o for j, o in span) for span in self.spans]  # type: ignore[misc]


def skeleton(turns: Sequence[Turn], padded: bool = False) -> list[dict[str, str]]:
    """The skeleton messages of a shape: each content (and reasoning) a slot, padded with whitespace or not."""

    def value(i: int) -> str:
        return f"{_PAD_LEFT}{slot(i)}{_PAD_RIGHT}" if padded else slot(i)

    out = []
    for i, t in enumerate(turns):
        msg = {"role": t.role, "content": value(2 * i)}
        if t.reasoning is not None:
            msg["reasoning_content"] = value(2 * i + 1)
        out.append(msg)
    return out


def compile_layouts(
    template: ChatTemplate, turns: Sequence[Turn], supervised: Sequence[int], *, each: bool
) -> list[Layout]:
    """The layouts of one conversation shape (`turns` with `reasoning` set to any string where a reply has it)."""
    plans = []
    for padded in (False, True):
        msgs = skeleton(turns, padded)
        marked = [
            Turn(t.role, t.kind, None if t.reasoning is None else msgs[i]["reasoning_content"])
            for i, t in enumerate(turns)
        ]

        def render(k: int, gen: bool, msgs: list[dict[str, str]] = msgs) -> str:
            return template.render_marked(msgs[:k], gen=gen)

        def anchored(n: int, gen: bool, at: int, msgs: list[dict[str, str]] = msgs) -> tuple[str, int]:
            text = render(n, gen, msgs)  # a skeleton's contents are slots: message `at`'s slot is its anchor
            found = text.rfind(slot(2 * at))
            return text, found + len(slot(2 * at)) if found >= 0 else -1

        plans.append(plan(template, render, marked, supervised, each=each, anchored=anchored))
    plain, padded = plans
    if [e.replies for e in plain] != [e.replies for e in padded]:
        raise TemplateError("the chat template places replies differently when their content has whitespace around")
    return [_layout(a, b) for a, b in zip(plain, padded, strict=True)]


def _layout(plain: Example, padded: Example) -> Layout:
    pieces, order, bounds = [], [], []
    last = 0
    for m in SLOT.finditer(plain.text):
        pieces.append(plain.text[last : m.start()])
        bounds.append((last, m.start()))
        order.append(int(m.group(1)))
        last = m.end()
    pieces.append(plain.text[last:])
    bounds.append((last, len(plain.text)))

    def at_piece(p: int) -> Position:
        """(piece, offset) of a position of the plain text that lies in fixed text."""
        found = next(((j, p - s) for j, (s, e) in enumerate(bounds) if s <= p <= e), None)
        if found is None:
            raise TemplateError("the chat template closes a reply inside its content: eosguard cannot place it")
        return found

    spans = [(at_piece(a), at_piece(b), at_piece(c)) for a, b, c in plain.spans]
    return Layout(pieces, order, _strips(plain.text, padded.text), spans, plain.replies, plain.own, plain.treated)


def _strips(plain: str, padded: str) -> dict[int, tuple[Strip, Strip]]:
    """What the template strips from each slot: compare the skeleton text with the one whose slots are padded."""
    plain_pieces, padded_split = SLOT.split(plain)[0::2], SLOT.split(padded)
    padded_pieces, padded_ids = padded_split[0::2], [int(i) for i in padded_split[1::2]]
    plain_ids = [int(m.group(1)) for m in SLOT.finditer(plain)]
    if padded_ids != plain_ids:
        raise TemplateError("the chat template renders messages in another order when their content changes")
    kept_left: dict[int, int] = {}
    kept_right: dict[int, int] = {}
    for j, (a, b) in enumerate(zip(plain_pieces, padded_pieces, strict=True)):
        match = _padding_around(a, b)
        if match is None:
            raise TemplateError(
                "the chat template changes the text around a message when its content starts or ends with "
                "whitespace, beyond trimming it: eosguard cannot follow it"
            )
        right, left = match  # the piece is preceded by a slot's right padding, followed by one's left
        if j > 0:
            kept_right[plain_ids[j - 1]] = right
        if j < len(plain_ids):
            kept_left[plain_ids[j]] = left
    return {
        i: (_strip_of(_PAD_LEFT, kept_left[i], left=True), _strip_of(_PAD_RIGHT, kept_right[i], left=False))
        for i in plain_ids
    }


def _apply_strip(text: str, strip: tuple[Strip, Strip]) -> str:
    (left, lchars), (right, rchars) = strip
    if left:
        text = text.lstrip(lchars)
    if right:
        text = text.rstrip(rchars)
    return text


def _padding_around(plain: str, padded: str) -> tuple[int, int] | None:
    """How much right padding (of the slot before) and left padding (of the slot after) `padded` kept."""
    for right in range(len(_PAD_RIGHT), -1, -1):
        for left in range(len(_PAD_LEFT), -1, -1):
            tail = _PAD_LEFT[len(_PAD_LEFT) - left :] if left else ""
            if padded == _PAD_RIGHT[:right] + plain + tail:
                return right, left
    return None


def _strip_of(pad: str, kept: int, *, left: bool) -> Strip:
    """The strip that turns `pad` into what the template kept of it."""
    if kept == len(pad):
        return (False, None)
    if kept == 0:
        return (True, None)  # everything removed: str.strip() semantics
    removed = pad[: len(pad) - kept] if left else pad[kept:]
    return (True, "".join(sorted(set(removed))))


# -- marker anchors ----------------------------------------------------------------------------------------------


def anchor(template: ChatTemplate, layout: Layout, at: Position) -> tuple[int, int] | None:
    """A position of the layout's fixed text as (k, d): the token at it is token k + d of the marker tokens
    (d = 0: the k-th marker itself; d = 1: the token after it), whatever the contents; None when no marker pins
    it (then only character offsets can place it). (-1, 0) stands for the end of the text."""
    markers = template.markers
    j, o = at
    piece = layout.pieces[j]
    if j == len(layout.pieces) - 1 and o == len(piece):
        return (-1, 0)
    before = marker_count(template, layout, upto=at)
    if o < len(piece) and piece[o] in markers.all_markers:
        return (before, 0)
    # Just past a marker, the next token starts here - unless the marker swallows the whitespace after it.
    if o > 0 and piece[o - 1] in markers.all_markers and piece[o - 1] not in markers.absorbs_after:
        return (before - 1, 1)
    return None


def marker_count(template: ChatTemplate, layout: Layout, upto: Position | None = None) -> int:
    """Marker tokens in the layout's fixed text (contents hold none), all of them or those before `upto`."""
    markers = template.markers.all_markers
    j, o = upto if upto is not None else (len(layout.pieces), 0)
    whole = sum(ch in markers for piece in layout.pieces[:j] for ch in piece)
    return whole + (sum(ch in markers for ch in layout.pieces[j][:o]) if j < len(layout.pieces) else 0)
