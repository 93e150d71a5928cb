"""Marked text: a chat template's control tokens as one private character each, and the tokenizer that encodes it.

Everything eosguard renders passes through one representation. In *marked* text every control token of the
tokenizer (every added token: `<|im_end|>`, `<|eot_id|>`, `<think>`, ...) written by the template stands as one
private-use character, its marker; message content is plain text. `Markers.plain` is a copy of the tokenizer that
knows no added tokens but those markers, so content that spells `<|im_end|>` is always encoded as the text it is,
never as the control token, while the template's own control tokens become their real ids (`Markers.id_map`).

Three more kinds of private characters travel in marked text:
- SPLIT forces a token boundary (eosguard puts one where each generation prompt ends) and is dropped from the ids;
- slots (`slot(i)`) stand for a message's content in the skeleton conversations `eosguard.chat.templates` renders;
- escapes: before real data is handed to a template, the text of each control token inside it is replaced by an
  escape character (`Markers.escape`), so the template can never mistake content for its own tokens; once the
  template has rendered and its tokens are marked, escapes turn back into the literal text (`unescape`).

All of Unicode plane 15's private-use area is reserved (`eosguard.data.conversations.RESERVED_RANGE`): content holding
any of it is rejected, so no text can collide with these characters.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer

SPLIT = "\U000f0000"  # not a token: forces a token boundary (after each generation prompt), then dropped
SLOT_OPEN, SLOT_CLOSE = "\U000f0001", "\U000f0002"  # a content slot is OPEN + slot number + CLOSE
SLOT = re.compile(f"{SLOT_OPEN}(\\d+){SLOT_CLOSE}")
ANCHOR = "\U000f0003"  # appended to one message's content to find where it ends in a rendering, then removed
_MARKER_BASE = 0xF0100  # added token k of the tokenizer stands as chr(_MARKER_BASE + k) in marked text
_ESCAPE_BASE = 0xF8100  # ... and its literal text inside content as chr(_ESCAPE_BASE + k) until unescaped
_MAX_TOKENS = _ESCAPE_BASE - _MARKER_BASE
DROP = -1  # id-map value of SPLIT: removed from the ids


def slot(i: int) -> str:
    """The placeholder for content slot i in a skeleton conversation."""
    return f"{SLOT_OPEN}{i}{SLOT_CLOSE}"


class Markers:
    """A tokenizer's control tokens as markers, escapes for their text in content, and the encoder of marked text.

    Example:
        >>> from eosguard.testing.fixtures import demo_tokenizer
        >>> m = Markers(demo_tokenizer())
        >>> marked = m.mark("<|im_start|>user\\nHi<|im_end|>")
        >>> len(marked), m.decode_marked(marked)
        (9, '<|im_start|>user\\nHi<|im_end|>')
    """

    def __init__(self, tokenizer: Any) -> None:
        added = sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1])
        self.control_tokens: list[str] = [t for t, _ in added if t]
        if len(self.control_tokens) > _MAX_TOKENS:
            raise ValueError(f"{len(self.control_tokens)} added tokens: eosguard marks at most {_MAX_TOKENS}")
        self.marker_of = {t: chr(_MARKER_BASE + k) for k, t in enumerate(self.control_tokens)}
        self.token_of = {m: t for t, m in self.marker_of.items()}
        self._escape_of = {t: chr(_ESCAPE_BASE + k) for k, t in enumerate(self.control_tokens)}
        self._literal_of = {e: t for t, e in self._escape_of.items()}
        by_length = sorted(self.control_tokens, key=len, reverse=True)
        self._control_re = re.compile("|".join(re.escape(t) for t in by_length)) if by_length else None
        self._escape_re = re.compile(f"[{chr(_ESCAPE_BASE)}-{chr(_ESCAPE_BASE + max(len(added), 1))}]")
        self.plain, marker_index = _plain_tokenizer(tokenizer.backend_tokenizer, self.control_tokens)
        # plain id -> real id, as one lookup table
        self.id_map = np.arange(self.plain.get_vocab_size(with_added_tokens=True), dtype=np.int64)
        for marker_id, k in marker_index.items():
            self.id_map[marker_id] = tokenizer.convert_tokens_to_ids(self.control_tokens[k])
        self.id_map[self.plain.token_to_id(SPLIT)] = DROP
        self.control_ids = frozenset(int(self.id_map[i]) for i in marker_index)
        # Each marker (and SPLIT) is exactly one token: positions next to one can be read off the ids.
        decoder = self.plain.get_added_tokens_decoder()
        self.is_marker = np.zeros(len(self.id_map), dtype=bool)
        self.is_marker[list(decoder)] = True
        self.all_markers = frozenset(t.content for t in decoder.values())  # every marker and SPLIT
        self.absorbs_after = frozenset(t.content for t in decoder.values() if t.rstrip)

    # -- text ---------------------------------------------------------------------------------------------------

    def mark(self, text: str) -> str:
        """Template text with every control token replaced by its marker."""
        if self._control_re is None:
            return text
        return self._control_re.sub(lambda m: self.marker_of[m.group(0)], text)

    def is_control(self, ch: str) -> bool:
        """Whether a character of marked text is a control-token marker."""
        return ch in self.token_of

    def decode_marked(self, text: str) -> str:
        """Marked text written out: markers back to their tokens, escapes to their text, SPLIT and slots kept as
        they are except SPLIT, which is removed."""
        out = []
        for ch in text:
            if ch == SPLIT:
                continue
            out.append(self.token_of.get(ch) or self._literal_of.get(ch) or ch)
        return "".join(out)

    def escape(self, value: Any) -> Any:
        """A JSON-like value with the text of every control token inside its strings replaced by an escape."""
        if isinstance(value, str):
            if self._control_re is None:
                return value
            return self._control_re.sub(lambda m: self._escape_of[m.group(0)], value)
        if isinstance(value, dict):
            return {self.escape(k): self.escape(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.escape(v) for v in value]
        return value

    def unescape(self, text: str, positions: Sequence[int] = ()) -> tuple[str, list[int]]:
        """Escapes back to the literal text of their tokens, and where `positions` of `text` move to."""
        if self._control_re is None or not self._escape_re.search(text):
            return text, list(positions)
        parts: list[str] = []
        starts: list[int] = []  # (old index of each escape)
        grow: list[int] = []  # length added by each escape
        last = 0
        for m in self._escape_re.finditer(text):
            literal = self._literal_of[m.group(0)]
            parts += [text[last : m.start()], literal]
            starts.append(m.start())
            grow.append(len(literal) - 1)
            last = m.end()
        parts.append(text[last:])
        added = np.concatenate([[0], np.cumsum(grow)])
        moved = [p + int(added[np.searchsorted(starts, p, side="left")]) for p in positions]
        return "".join(parts), moved

    # -- ids ----------------------------------------------------------------------------------------------------

    def encode_marked(self, texts: Sequence[str]) -> list[list[int]]:
        """Real token ids of marked texts (SPLIT dropped)."""
        out = []
        for enc in self.plain.encode_batch(list(texts), add_special_tokens=False):
            ids = self.id_map[np.asarray(enc.ids, dtype=np.int64)]
            out.append(ids[ids != DROP].tolist())
        return out


def _plain_tokenizer(backend: Tokenizer, tokens: list[str]) -> tuple[Tokenizer, dict[int, int]]:
    """A copy of `backend` that knows no added tokens, only markers standing for them (and SPLIT).

    Each marker copies the lstrip/rstrip behaviour of its token, so whitespace next to a control token is absorbed
    exactly as the real tokenizer absorbs it. Returns the copy and a map marker id -> index into `tokens`. Built
    once per distinct tokenizer (the copy is only ever used to encode, so it is shared).
    """
    return _plain_of(backend, _fingerprint(backend), tuple(tokens))


def _fingerprint(backend: Tokenizer) -> tuple[Any, ...]:
    """What the plain copy reads off `backend` that can change in place, in a few milliseconds (serializing a
    150k-token tokenizer takes ~0.15 s, and the doctor builds a template several times per tokenizer): the model's
    kind and size, every added token with its flags, the normalizer and the pre-tokenizer."""
    added = tuple(
        (i, t.content, t.lstrip, t.rstrip, t.normalized, t.single_word, t.special)
        for i, t in sorted(backend.get_added_tokens_decoder().items())
    )
    parts = (backend.normalizer, backend.pre_tokenizer)
    states = tuple(p.__getstate__() if p is not None else None for p in parts)
    return type(backend.model).__name__, backend.get_vocab_size(with_added_tokens=False), added, states


@functools.lru_cache(maxsize=8)
def _plain_of(backend: Tokenizer, fingerprint: tuple[Any, ...], tokens: tuple[str, ...]) -> tuple[Tokenizer, dict]:
    """The plain copy of one tokenizer object (held here, so its identity stays its own) as `fingerprint` found it."""
    return _plain_from_spec(backend.to_str(), tokens)


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
