"""Chat templates, read off the template itself: where each message sits, what closes an assistant turn.

eosguard keeps no per-family tables. Given a tokenizer's own Jinja chat template (Llama-3, Gemma, Phi-3, Mistral,
Qwen, SmolLM2, ... or ChatML when it has none), `ChatTemplate` renders it on *skeletons*: conversations of the
same roles whose contents are unique placeholders. From those renderings it reads, for each sequence of roles:

- the fixed text around each message's content (the template's own words and control tokens);
- whether the template trims a message's content (Llama-3 and Gemma do), so eosguard can do the same;
- the end-of-turn token: the first control token the template writes after an assistant reply;
- where the generation prompt ends: `add_generation_prompt=True` rendered on the messages before each reply must
  be a prefix of the training text, or the model would be trained on text it never sees at inference;
- where each message ends (renderings of growing prefixes), for turn-aligned truncation.

A template that cannot be split this way (it rejects the roles, drops or repeats a message, transforms content
beyond trimming, rewrites earlier turns once a reply follows, or closes a reply with no control token) raises
`TemplateError` naming the behaviour; nothing is guessed. Control tokens (every added token of the tokenizer) are
replaced in the template's text by private-use markers, so that message content, inserted verbatim, is always
encoded as plain text: content that spells `<|im_end|>` never becomes the control token.

It knows no family's token strings: those live in `eosguard.families` alone (ChatML, which eosguard installs when a
tokenizer has no template; the reserved tokens that make safe pads; the families the tests are run on).

Why ~470 lines in one module: reading a template is one algorithm (skeletons, strips, prompts, closers, message
ends, markers) whose parts share the same positions; split up, each part would need the others' internals.

Run as:
    python -m eosguard.templates PATH_OR_HUB_ID   # prints what eosguard reads off that tokenizer's template
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer

from eosguard.errors import EosguardError
from eosguard.families import CHATML_TOKENS, chatml_template

# -- private-use markers -----------------------------------------------------------------------------------------
# All of plane 15's private-use area is reserved (eosguard.conversations.RESERVED_RANGE): content holding any of it
# is rejected, so no text can ever collide with a marker or a placeholder.
SPLIT = "\U000f0000"  # not a token: forces a token boundary (after each generation prompt), then dropped
_SLOT_OPEN, _SLOT_CLOSE = "\U000f0001", "\U000f0002"  # a content placeholder is OPEN + message index + CLOSE
_MARKER_BASE = 0xF0100  # added token k of the tokenizer stands as chr(_MARKER_BASE + k) in template text
_SLOT = re.compile(f"{_SLOT_OPEN}(\\d+){_SLOT_CLOSE}")
_PAD_LEFT, _PAD_RIGHT = "\n \t", "\t \n"  # padding around placeholders, to see what the template strips
DROP = -1  # id-map value of SPLIT: removed from the ids


def _slot(i: int) -> str:
    return f"{_SLOT_OPEN}{i}{_SLOT_CLOSE}"


class TemplateError(EosguardError):
    """The chat template cannot be split into messages and stop tokens; the message names the behaviour.

    `finding` is the doctor finding it amounts to: "template-no-eos" when a reply is not closed by a control
    token, "template-unsupported" otherwise.
    """

    def __init__(self, message: str, *, hint: str | None = None, finding: str = "template-unsupported") -> None:
        super().__init__(message, hint=hint)
        self.finding = finding


Strip = tuple[bool, str | None]  # (apply, chars): str.lstrip/rstrip(chars) when apply; chars None = whitespace


@dataclass
class Layout:
    """One sequence of roles as the template renders it, with positions as (piece index, offset in piece).

    pieces: the template's fixed text (control tokens as markers, a SPLIT after each valid generation prompt)
        around the content slots; order: the message index in each slot, in order of appearance;
    strips: per message, what the template strips from its content (left, right);
    prompt_end / closer: per assistant message, where its generation prompt ends and where its end-of-turn
        marker sits, or a string saying why there is none;
    ends: per message, the position just past it.
    """

    roles: tuple[str, ...]
    pieces: list[str]
    order: list[int]
    strips: list[tuple[Strip, Strip]]
    prompt_end: dict[int, tuple[int, int] | str] = field(default_factory=dict)
    closer: dict[int, tuple[int, int] | str] = field(default_factory=dict)
    ends: list[tuple[int, int]] = field(default_factory=list)

    def assemble(self, contents: Sequence[str]) -> tuple[str, list[int]]:
        """The marked text for these contents, and the start offset of each piece in it."""
        parts: list[str] = []
        starts: list[int] = []
        pos = 0
        for j, piece in enumerate(self.pieces):
            starts.append(pos)
            parts.append(piece)
            pos += len(piece)
            if j < len(self.order):
                content = _apply_strip(contents[self.order[j]], self.strips[self.order[j]])
                parts.append(content)
                pos += len(content)
        return "".join(parts), starts


def _apply_strip(text: str, strip: tuple[Strip, Strip]) -> str:
    (left, lchars), (right, rchars) = strip
    if left:
        text = text.lstrip(lchars)
    if right:
        text = text.rstrip(rchars)
    return text


def _plain_tokenizer(backend: Tokenizer, tokens: list[str]) -> tuple[Tokenizer, dict[int, int]]:
    """A copy of `backend` that knows no added tokens, only markers standing for them (and SPLIT).

    Each marker copies the lstrip/rstrip behaviour of its token, so whitespace next to a control token is absorbed
    exactly as the real tokenizer absorbs it. Returns the copy and a map marker id -> index into `tokens`. Built
    once per distinct tokenizer (the copy is only ever used to encode, so it is shared).
    """
    return _plain_from_spec(backend.to_str(), tuple(tokens))


@functools.lru_cache(maxsize=8)
def _plain_from_spec(serialized: str, tokens: tuple[str, ...]) -> tuple[Tokenizer, dict[int, int]]:
    spec = json.loads(serialized)
    real = {tok["content"]: tok for tok in spec.get("added_tokens", [])}
    spec["added_tokens"] = []
    spec["post_processor"] = None
    spec["truncation"] = None
    spec["padding"] = None
    _split_at_words(spec)
    plain = Tokenizer.from_str(json.dumps(spec))
    markers = [
        AddedToken(
            chr(_MARKER_BASE + k),
            special=True,
            normalized=False,
            lstrip=real.get(t, {}).get("lstrip", False),
            rstrip=real.get(t, {}).get("rstrip", False),
        )
        for k, t in enumerate(tokens)
    ]
    plain.add_special_tokens([*markers, AddedToken(SPLIT, special=True, normalized=False)])
    return plain, {plain.token_to_id(chr(_MARKER_BASE + k)): k for k in range(len(tokens))}


_WORD = "\u2581"  # SentencePiece's word marker "▁": a space, once normalized


def _split_at_words(spec: dict[str, Any]) -> bool:
    """Let a SentencePiece-style BPE tokenizer (Mistral, Llama-2, Gemma) encode word by word; True when applied.

    Such a tokenizer pre-tokenizes nothing: all text between two control tokens is one "word", and BPE merges over
    hundreds of characters at once. A token boundary before every "▁" that follows another character changes no id
    and no offset if no merge joins a piece that ends in something other than "▁" to one that starts with "▁": BPE
    can then never merge across such a boundary, so the pieces come out exactly as the whole would. That is checked
    on the merges themselves (SentencePiece vocabularies split at whitespace, so it holds for Mistral's: encoding
    is ~1.35x faster, tests compare both on text with every kind of whitespace); when it fails nothing changes.
    """
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer")
    if model.get("type") != "BPE" or model.get("dropout") or _WORD not in model.get("vocab", {}):
        return False
    if pre is not None and not (pre.get("type") == "Metaspace" and pre.get("split") is False):
        return False  # byte-level and other pre-tokenizers already split (or split their own way)
    for merge in model.get("merges", []):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if right.startswith(_WORD) and not left.endswith(_WORD):
            return False
    split = {
        "type": "Split",
        "pattern": {"Regex": f"(?<=[^{_WORD}]){_WORD}"},
        "behavior": "MergedWithNext",
        "invert": False,
    }
    spec["pre_tokenizer"] = split if pre is None else {"type": "Sequence", "pretokenizers": [pre, split]}
    return True


class ChatTemplate:
    """A tokenizer's chat template, split into what training needs (see the module doc).

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        source: the Jinja template; default: the tokenizer's own. A tokenizer without one gets a clear error
            (`eosguard.tokenizer_setup.prepare_tokenizer` installs ChatML).

    Example:
        >>> from eosguard.fixtures import family_tokenizer
        >>> t = ChatTemplate(family_tokenizer("llama3"))
        >>> t.end_of_turn, t.decode_marked(t.layout(("user", "assistant")).pieces[1])
        ('<|eot_id|>', '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n')
    """

    def __init__(self, tokenizer: Any, source: str | None = None) -> None:
        require_fast(tokenizer)
        self.tokenizer = tokenizer
        self.source = source or getattr(tokenizer, "chat_template", None)
        if not self.source:
            raise TemplateError(
                "the tokenizer has no chat template",
                hint="eosguard.tokenizer_setup.prepare_tokenizer installs ChatML (or set one on the tokenizer)",
            )
        added = sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1])
        self.control_tokens = [t for t, _ in added if t]
        self._marker_of = {t: chr(_MARKER_BASE + k) for k, t in enumerate(self.control_tokens)}
        self._token_of = {m: t for t, m in self._marker_of.items()}
        by_length = sorted(self.control_tokens, key=len, reverse=True)
        self._control_re = re.compile("|".join(re.escape(t) for t in by_length)) if by_length else None
        self.plain, marker_index = _plain_tokenizer(tokenizer.backend_tokenizer, self.control_tokens)
        # plain id -> real id, as one lookup table
        self.id_map = np.arange(self.plain.get_vocab_size(with_added_tokens=True), dtype=np.int64)
        for marker_id, k in marker_index.items():
            self.id_map[marker_id] = tokenizer.convert_tokens_to_ids(self.control_tokens[k])
        self.id_map[self.plain.token_to_id(SPLIT)] = DROP
        self.control_ids = frozenset(int(self.id_map[i]) for i in marker_index)
        # Each marker (and SPLIT) is exactly one token: positions next to one can be read off the ids (`anchor`).
        added = self.plain.get_added_tokens_decoder()
        self.is_marker = np.zeros(len(self.id_map), dtype=bool)
        self.is_marker[list(added)] = True
        self._markers = frozenset(t.content for t in added.values())
        self._absorbs_after = frozenset(t.content for t in added.values() if t.rstrip)
        self._layouts: dict[tuple[str, ...], Layout] = {}
        probe = self.layout(("user", "assistant"))
        closer = probe.closer[1]
        if isinstance(closer, str):
            self.end_of_turn: str | None = None
            self.end_of_turn_id: int | None = None
            self.problem: str | None = closer
        else:
            marker = probe.pieces[closer[0]][closer[1]]
            self.end_of_turn = self._token_of[marker]
            self.end_of_turn_id = tokenizer.convert_tokens_to_ids(self.end_of_turn)
            self.problem = None
        self.assistant_header_ids = self._assistant_header(probe)

    # -- rendering skeletons ------------------------------------------------------------------------------------

    def render_messages(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The template's own text for these messages (TemplateError when the template raises)."""
        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.source, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as exc:  # jinja's TemplateError, raise_exception(), a template bug: all are the template's
            roles = ", ".join(m["role"] for m in messages)
            raise TemplateError(f"the chat template rejects a conversation of roles [{roles}]: {exc}") from None

    def mark(self, text: str) -> str:
        """Template text with every control token replaced by its marker."""
        if self._control_re is None:
            return text
        return self._control_re.sub(lambda m: self._marker_of[m.group(0)], text)

    def decode_marked(self, text: str) -> str:
        """Marked text written out: markers back to their tokens, SPLIT removed."""
        out = []
        for ch in text:
            if ch == SPLIT:
                continue
            out.append(self._token_of.get(ch, ch))
        return "".join(out)

    def _skeleton(self, roles: Sequence[str], add_generation_prompt: bool = False, padded: bool = False) -> str:
        def content(i: int) -> str:
            return f"{_PAD_LEFT}{_slot(i)}{_PAD_RIGHT}" if padded else _slot(i)

        msgs = [{"role": r, "content": content(i)} for i, r in enumerate(roles)]
        return self.mark(self.render_messages(msgs, add_generation_prompt))

    def layout(self, roles: Sequence[str]) -> Layout:
        """The layout of this sequence of roles (computed once, then cached)."""
        key = tuple(roles)
        if key not in self._layouts:
            self._layouts[key] = self._build_layout(key)
        return self._layouts[key]

    def _build_layout(self, roles: tuple[str, ...]) -> Layout:
        skel = self._skeleton(roles)
        found = [(int(m.group(1)), m.start(), m.end()) for m in _SLOT.finditer(skel)]
        seen = [i for i, _, _ in found]
        for i, role in enumerate(roles):
            n = seen.count(i)
            if n != 1:
                what = "drops" if n == 0 else f"repeats ({n} times)"
                raise TemplateError(
                    f"the chat template {what} the content of message {i} ({role}) in a conversation of roles "
                    f"[{', '.join(roles)}]: eosguard cannot place its tokens",
                    hint="use a template that writes each message once (e.g. template: chatml)",
                )
        slot_start = {i: s for i, s, _ in found}
        slot_end = {i: e for i, _, e in found}
        strips = self._strips(roles, skel)

        # Generation prompts: each must be a prefix of the training text, ending between the previous content and
        # this reply's content.
        prompt_end: dict[int, int | str] = {}
        for k, role in enumerate(roles):
            if role != "assistant":
                continue
            prompt = self._skeleton(roles[:k], add_generation_prompt=True)
            before = max((slot_end[i] for i in range(k) if slot_end[i] <= slot_start[k]), default=0)
            if not skel.startswith(prompt):
                prompt_end[k] = (
                    f"the generation prompt for message {k} is not a prefix of the conversation as rendered for "
                    "training: the template renders earlier turns differently once a reply follows"
                )
            elif not before <= len(prompt) <= slot_start[k]:
                prompt_end[k] = f"the generation prompt for message {k} does not end where its reply begins"
            else:
                prompt_end[k] = len(prompt)

        # End-of-turn: the first control token after each reply, before anything else is written of a message.
        closer: dict[int, int | str] = {}
        for k, role in enumerate(roles):
            if role != "assistant":
                continue
            limit = min((s for s in slot_start.values() if s > slot_end[k]), default=len(skel))
            at = next((p for p in range(slot_end[k], limit) if skel[p] in self._token_of), None)
            if at is None:
                closer[k] = f"the chat template writes no control token after the reply of message {k}"
            else:
                closer[k] = at

        # Message ends: growing prefixes, as far as they agree with the whole.
        ends: list[int] = []
        for k in range(len(roles)):
            try:
                part = len(skel) if k == len(roles) - 1 else _common_prefix(self._skeleton(roles[: k + 1]), skel)
            except TemplateError:  # the template rejects this prefix: no cut point here
                part = 0
            ends.append(max(part, ends[-1] if ends else 0))

        # Insert a SPLIT at each valid generation-prompt end, shifting every later position.
        cuts = sorted({p for p in prompt_end.values() if isinstance(p, int)})

        def shift(p: int) -> int:
            return p + sum(1 for c in cuts if c <= p)

        marked = skel
        for c in reversed(cuts):
            marked = marked[:c] + SPLIT + marked[c:]
        pieces: list[str] = []
        order: list[int] = []
        boundaries: list[tuple[int, int]] = []  # (start, end) of each piece in `marked`
        last = 0
        for m in _SLOT.finditer(marked):
            pieces.append(marked[last : m.start()])
            boundaries.append((last, m.start()))
            order.append(int(m.group(1)))
            last = m.end()
        pieces.append(marked[last:])
        boundaries.append((last, len(marked)))

        def at_piece(p: int) -> tuple[int, int]:
            """(piece, offset) of a position in `marked` that lies in fixed text."""
            return next((j, p - s) for j, (s, e) in enumerate(boundaries) if s <= p <= e)

        layout = Layout(roles=roles, pieces=pieces, order=order, strips=strips)
        for k, p in prompt_end.items():
            # the SPLIT sits at the old position; the prompt ends just before it
            layout.prompt_end[k] = p if isinstance(p, str) else at_piece(shift(p) - 1)
        for k, p in closer.items():
            layout.closer[k] = p if isinstance(p, str) else at_piece(shift(p))
        layout.ends = [at_piece(shift(p)) for p in ends]
        return layout

    def _strips(self, roles: tuple[str, ...], skel: str) -> list[tuple[Strip, Strip]]:
        """What the template strips from each content: compare the skeleton with one whose contents are padded."""
        padded = self._skeleton(roles, padded=True)
        plain_pieces = _SLOT.split(skel)[0::2]
        padded_split = _SLOT.split(padded)
        padded_pieces, padded_ids = padded_split[0::2], [int(i) for i in padded_split[1::2]]
        plain_ids = [int(m.group(1)) for m in _SLOT.finditer(skel)]
        if padded_ids != plain_ids:
            raise TemplateError("the chat template renders messages in another order when their content changes")
        kept_left: dict[int, int] = {}
        kept_right: dict[int, int] = {}
        for j, (plain, pad) in enumerate(zip(plain_pieces, padded_pieces, strict=True)):
            match = _padding_around(plain, pad)
            if match is None:
                raise TemplateError(
                    "the chat template changes the text around a message when its content starts or ends with "
                    "whitespace, beyond trimming it: eosguard cannot follow it"
                )
            right, left = match  # the piece is preceded by a content's right padding, followed by one's left
            if j > 0:
                kept_right[plain_ids[j - 1]] = right
            if j < len(plain_ids):
                kept_left[plain_ids[j]] = left
        out = []
        for i in range(len(roles)):
            out.append(
                (_strip_of(_PAD_LEFT, kept_left[i], left=True), _strip_of(_PAD_RIGHT, kept_right[i], left=False))
            )
        return out

    def require_end_of_turn(self) -> tuple[str, int]:
        """The end-of-turn token and its id; TemplateError (template-no-eos) when the template closes no reply."""
        if self.problem is not None or self.end_of_turn is None or self.end_of_turn_id is None:
            raise TemplateError(f"cannot train with this chat template: {self.problem}", **_NO_EOS)
        return self.end_of_turn, self.end_of_turn_id

    def reply_span(self, layout: Layout, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Where message k's generation prompt ends and where its end-of-turn marker sits; TemplateError if the
        template gives it no clean place (the reply cannot be supervised)."""
        self.require_end_of_turn()
        prompt_end, closer = layout.prompt_end[k], layout.closer[k]
        if isinstance(closer, str):
            raise TemplateError(closer, **_NO_EOS)
        found = self._token_of[layout.pieces[closer[0]][closer[1]]]
        if found != self.end_of_turn:
            raise TemplateError(
                f"the chat template closes the reply of message {k} with {found!r}, not with its end-of-turn token "
                f"{self.end_of_turn!r} (it closes only the last reply)",
                **_NO_EOS,
            )
        if isinstance(prompt_end, str):
            raise TemplateError(
                prompt_end, hint="train on the last reply only (train_on: last) or use template: chatml"
            )
        return prompt_end, closer

    # -- what the guard needs -----------------------------------------------------------------------------------

    def _assistant_header(self, probe: Layout) -> list[int]:
        """Ids that introduce an assistant reply in any pipeline's rows: the fixed text between the user's content
        and the reply, after the user's end-of-turn, without trailing whitespace tokens."""
        pe = probe.prompt_end.get(1)
        if not isinstance(pe, tuple):
            return []
        header = probe.pieces[pe[0]][: pe[1]]
        if self.end_of_turn is not None and self._marker_of[self.end_of_turn] in header:
            header = header[header.rindex(self._marker_of[self.end_of_turn]) + 1 :]
        header = header.lstrip()
        ids = self.encode_marked([header])[0]
        while ids and ids[-1] not in self.control_ids and not self.tokenizer.decode([ids[-1]]).strip():
            ids.pop()
        return ids

    def anchor(self, layout: Layout, at: tuple[int, int]) -> tuple[int, int] | None:
        """A position of the layout's fixed text as (k, d): the token at it is token k + d of the marker tokens
        (d = 0: the k-th marker itself; d = 1: the token after it), whatever the contents; None when no marker
        pins it (then only character offsets can place it). (-1, 0) stands for the end of the text."""
        j, o = at
        piece = layout.pieces[j]
        if j == len(layout.pieces) - 1 and o == len(piece):
            return (-1, 0)
        before = self.marker_count(layout, upto=at)
        if o < len(piece) and piece[o] in self._markers:
            return (before, 0)
        # Just past a marker, the next token starts here - unless the marker swallows the whitespace after it.
        if o > 0 and piece[o - 1] in self._markers and piece[o - 1] not in self._absorbs_after:
            return (before - 1, 1)
        return None

    def marker_count(self, layout: Layout, upto: tuple[int, int] | None = None) -> int:
        """Marker tokens in the layout's fixed text (contents hold none), all of them or those before `upto`."""
        j, o = upto if upto is not None else (len(layout.pieces), 0)
        whole = sum(ch in self._markers for piece in layout.pieces[:j] for ch in piece)
        return whole + (sum(ch in self._markers for ch in layout.pieces[j][:o]) if j < len(layout.pieces) else 0)

    def encode_marked(self, texts: Sequence[str]) -> list[list[int]]:
        """Real token ids of marked texts (SPLIT dropped)."""
        out = []
        for enc in self.plain.encode_batch(list(texts), add_special_tokens=False):
            ids = self.id_map[np.asarray(enc.ids, dtype=np.int64)]
            out.append(ids[ids != DROP].tolist())
        return out

    def describe(self) -> list[str]:
        """What eosguard reads off this template, in words."""
        probe = self.layout(("user", "assistant"))
        lines = [
            f"end of turn: {self.end_of_turn!r} (id {self.end_of_turn_id})"
            if self.problem is None
            else f"no end of turn: {self.problem}"
        ]
        pe = probe.prompt_end[1]
        if isinstance(pe, tuple):
            lines.append(f"generation prompt ends with: {self.decode_marked(probe.pieces[pe[0]][: pe[1]])!r}")
        header = self.tokenizer.convert_ids_to_tokens(self.assistant_header_ids)
        lines.append(f"assistant header tokens: {header}")
        trims = sorted({r for r, s in zip(probe.roles, probe.strips, strict=True) if s[0][0] or s[1][0]})
        if trims:
            lines.append(f"content trimmed for: {', '.join(trims)}")
        return lines


_NO_EOS: dict[str, str] = {
    "hint": "use a template that closes every reply with a control token (e.g. template: chatml)",
    "finding": "template-no-eos",
}


def require_fast(tokenizer: Any) -> None:
    """eosguard reads templates and offsets with the Rust `tokenizers` backend: a slow tokenizer is a clear error."""
    if not getattr(tokenizer, "is_fast", False):
        raise EosguardError("eosguard needs a fast (Rust `tokenizers`) tokenizer", hint="load it with use_fast=True")


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _padding_around(plain: str, padded: str) -> tuple[int, int] | None:
    """How much right padding (of the content before) and left padding (of the content after) `padded` kept."""
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


def template_for(tokenizer: Any) -> ChatTemplate:
    """The tokenizer's template, or the ChatML eosguard would install when it has none and knows ChatML's tokens."""
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplate(tokenizer)
    vocab = tokenizer.get_vocab()
    if all(t in vocab for t in CHATML_TOKENS):
        return ChatTemplate(tokenizer, chatml_template(None))
    return ChatTemplate(tokenizer)  # raises: no template


if __name__ == "__main__":
    from eosguard.tokenizer_setup import load_tokenizer

    for line in template_for(load_tokenizer(sys.argv[1])).describe():
        print(line)
