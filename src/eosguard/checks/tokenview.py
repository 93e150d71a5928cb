"""Collated rows token by token, as a person reads them: readable text, id, label and what the loss does with it.

One view for the terminal (`eosguard doctor --show N`) and the HTML label viewer (`eosguard doctor --html`): each
token's text is what it decodes to in its context (byte-level `Ġ`/`Ċ` and SentencePiece `▁` become spaces and
newlines), never the raw vocabulary piece, which stays available for a tooltip. Whether a token is trained comes from
its label only (label != -100), and padding from the attention mask, never from comparing ids with the pad id.

Run as:
    eosguard doctor --tokenizer PATH --show 2
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eosguard.chat.render import IGNORE_INDEX
from eosguard.chat.templates import common_prefix

TokenKind = Literal["trained", "masked", "pad"]
NEWLINE_MARK = "↵"
TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"  # marks trained runs where there is no colour (logs, pipes)
_WINDOW = 8  # tokens of left context decoded with each token: enough for any multi-byte character


@dataclass(frozen=True)
class TokenView:
    """One position of a collated row."""

    text: str  # what the token decodes to here ("" or "�" for a partial UTF-8 character)
    piece: str  # the raw vocabulary piece, e.g. "Ġare" or "▁are"
    id: int
    label: int
    pad: bool  # attention_mask == 0
    end_of_turn: bool  # the end-of-turn token that closes an assistant reply: the one that must be trained

    @property
    def kind(self) -> TokenKind:
        if self.pad:
            return "pad"
        return "masked" if self.label == IGNORE_INDEX else "trained"


def readable_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text in context: the growth of the decoded text when the token is added to a short window.

    Decoding in context (not token by token) turns byte-level and SentencePiece pieces into real text, joins byte
    fallback tokens into their character, and keeps the leading space that SentencePiece drops at a text's start.

    Example:
        >>> from eosguard.testing.fixtures import family_tokenizer
        >>> tok = family_tokenizer("smollm2")
        >>> ids = tok.encode("Hi there\\nyou", add_special_tokens=False)
        >>> tok.convert_ids_to_tokens(ids), readable_pieces(tok, ids)
        (['Hi', 'Ġthere', 'Ċ', 'you'], ['Hi', ' there', '\\n', 'you'])
    """
    out: list[str] = []
    ids = list(ids)
    for i in range(len(ids)):
        start = max(0, i - _WINDOW)
        before = _decode(tokenizer, ids[start:i]) if i > start else ""
        after = _decode(tokenizer, ids[start : i + 1])
        same = common_prefix(before, after)
        out.append(after[same:])  # what this token added (a character completed by it shows here whole)
    return out


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_views(tokenizer: Any, batch: dict[str, Any], row: int, reply_stops: Collection[int]) -> list[TokenView]:
    """The views of one collated row (padding included, marked by the attention mask); `reply_stops` are the
    positions of the end-of-turn tokens that close assistant replies (`StopTokenChecker.reply_stops`)."""
    ids = [int(i) for i in batch["input_ids"][row].tolist()]
    labels = [int(y) for y in batch["labels"][row].tolist()]
    mask = batch.get("attention_mask")
    keep = [int(k) for k in mask[row].tolist()] if mask is not None else [1] * len(ids)
    texts = readable_pieces(tokenizer, [i for i, k in zip(ids, keep, strict=True) if k])
    real = iter(texts)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [
        TokenView(
            text=next(real) if k else "",
            piece=str(piece),
            id=i,
            label=y,
            pad=not k,
            end_of_turn=bool(k) and pos in reply_stops,
        )
        for pos, (i, y, k, piece) in enumerate(zip(ids, labels, keep, pieces, strict=True))
    ]


def visible(text: str) -> str:
    """Whitespace a reader must see: a newline shows as ↵ (and still breaks the line), a tab as ⇥."""
    return text.replace("\n", NEWLINE_MARK + "\n").replace("\t", "⇥")


def marked_segments(views: Sequence[TokenView]) -> list[tuple[str, str]]:
    """(text, style) pieces of a row: style is "trained", "masked", "mark" (the ⟦ ⟧ around trained runs) or "pad"."""
    out: list[tuple[str, str]] = []
    trained = False
    pads = 0
    for v in views:
        if v.pad:
            pads += 1
            continue
        if (v.kind == "trained") != trained:
            out.append((TRAINED_CLOSE if trained else TRAINED_OPEN, "mark"))
            trained = not trained
        out.append((visible(v.text), v.kind))
    if trained:
        out.append((TRAINED_CLOSE, "mark"))
    if pads:
        out.append((f" [+{pads} pad]", "pad"))
    return out


def plain_line(views: Sequence[TokenView]) -> str:
    """The row as text with trained runs between ⟦ ⟧ and padding counted: readable with no colour at all.

    Example:
        >>> v = lambda t, y, pad=False: TokenView(t, t, 0, y, pad, False)
        >>> plain_line([v("Hi", -100), v(" there", 5), v("!", 6), v("", 0, pad=True)])
        'Hi⟦ there!⟧ [+1 pad]'
    """
    return "".join(text for text, _ in marked_segments(views))


__all__ = ["TokenView", "marked_segments", "plain_line", "readable_pieces", "token_views", "visible"]
