"""ChatML rendering: one function turns a conversation into token ids and a training mask.

This module is the single source of truth for the token layout of training examples *and* generation prompts:

    <bos>?<|im_start|>system\\n{content}<|im_end|>\\n<|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n{content}<|im_end|>\\n ...

Which tokens are trained (mask = True): the content of each supervised assistant turn **and the `<|im_end|>`
that closes it**. Training on that stop token is the whole point of eosguard: it is the only way the model learns
to end its turn; a setup that masks it (pad == eos plus a collator that masks by id) gives a model that rambles on
and writes the user's next turn itself. Everything else is context, not target: the role headers (the prompt
supplies them at inference), system and user text, and the "\\n" after `<|im_end|>` (generation stops at
`<|im_end|>`, so the model never has to produce it).

How the ids are made: the conversation is rendered to one string in which the template's own control tokens
are private markers, then encoded in one batched call by a copy of the tokenizer that knows *no* added tokens but
those markers. So message content is always plain text - a user who types `<|im_end|>` gets the text tokens of
"<|im_end|>", never its id - and every other piece is split and encoded exactly as the real tokenizer splits the
rendered text at its control tokens. One more boundary is kept on purpose: between an assistant header and its
reply, so the generation prompt (which ends with the header) is always a token prefix of the training example.
For content without special-token text the ids equal `tokenizer.apply_chat_template(messages, tokenize=True)` with
the ChatML template of `chatml_template()`; the one exception is a byte-level BPE tokenizer and a reply that starts
with whitespace it would merge with the header's newline (tests pin both on Mistral's SentencePiece and Tekken).

Run as:
    python -m eosguard.chatml   # prints a rendered example with its trained tokens, using the demo tokenizer
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from tokenizers import AddedToken, Tokenizer

from eosguard.conversations import Conversation, Message
from eosguard.errors import EosguardError

IGNORE_INDEX = -100
"""Label value the loss ignores (PyTorch's CrossEntropyLoss default). Masks become labels in `labels_from_mask` only."""

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

TrainOn = Literal["all", "last"]
OverLength = Literal["drop", "truncate", "error"]

# Private-use code points standing for the template's control tokens while the text is encoded (see module doc).
_MARK_BOS, _MARK_START, _MARK_END = "\U000f0000", "\U000f0001", "\U000f0002"
# Not a token: forces a token boundary between an assistant header and its reply, then is dropped (see _to_rendered).
_MARK_SPLIT = "\U000f0003"
_DROP = -1  # id-map value of the split marker: removed from the ids


def chatml_template(bos_token: str | None) -> str:
    """The Jinja chat template matching `render_conversation`, to save with the tokenizer for inference.

    `bos_token` is written once at the start when the model was pre-trained with one (Mistral, Llama); the
    template is then self-contained: `apply_chat_template(..., tokenize=True)` needs no post-processor.
    """
    head = "{{ bos_token }}" if bos_token else ""
    return (
        head + "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


@dataclass
class Rendered:
    """One conversation as tokens.

    input_ids: the token ids; mask: True where the token is a training target;
    message_ends: for each message, the token index just past it (past its "\\n"), for turn-aligned truncation;
    stop_positions: indices of the `<|im_end|>` tokens that close supervised assistant turns.
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
    ids = np.asarray(input_ids, dtype=np.int64)
    return np.where(np.asarray(mask, dtype=bool), ids, IGNORE_INDEX).tolist()


def _plain_text_tokenizer(backend: Tokenizer, control: dict[str, str]) -> tuple[Tokenizer, dict[int, str]]:
    """A copy of `backend` that knows no added tokens except private markers for the template's control tokens.

    The markers copy the lstrip/rstrip behaviour of the control token they stand for, so whitespace next to a
    control token is absorbed exactly as the real tokenizer would absorb it.
    """
    spec = json.loads(backend.to_str())
    real_added = {tok["content"]: tok for tok in spec.get("added_tokens", [])}
    spec["added_tokens"] = []
    spec["post_processor"] = None
    spec["truncation"] = None
    spec["padding"] = None
    plain = Tokenizer.from_str(json.dumps(spec))
    markers = []
    for marker, token in control.items():
        props = real_added.get(token, {})
        markers.append(
            AddedToken(
                marker,
                special=True,
                normalized=False,
                lstrip=props.get("lstrip", False),
                rstrip=props.get("rstrip", False),
            )
        )
    markers.append(AddedToken(_MARK_SPLIT, special=True, normalized=False))
    plain.add_special_tokens(markers)
    marker_ids = {plain.token_to_id(marker): token for marker, token in control.items()}
    return plain, marker_ids


class ChatMLRenderer:
    """Render conversations to (input_ids, mask) for one tokenizer.

    Args:
        tokenizer: a Hugging Face fast tokenizer that has `<|im_start|>` and `<|im_end|>` (see
            `eosguard.tokenizer_setup.prepare_tokenizer`).
        bos: write the tokenizer's BOS token at the start. None: as the tokenizer does when it encodes text.
        train_on: "all" supervises every assistant turn; "last" only the last one. A message with
            `train=False` is never supervised, one with `train=True` always is.

    Example:
        >>> from eosguard.conversations import conversation
        >>> from eosguard.tokenizer_setup import demo_tokenizer
        >>> r = ChatMLRenderer(demo_tokenizer())
        >>> out = r.render(conversation(("user", "Hi"), ("assistant", "Hello")))
        >>> r.tokenizer.decode(out.input_ids[out.mask])
        'Hello<|im_end|>'
    """

    def __init__(self, tokenizer: Any, *, bos: bool | None = None, train_on: TrainOn = "all") -> None:
        self.tokenizer = tokenizer
        self.train_on = train_on
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IM_START, IM_END)}
        unk = getattr(tokenizer, "unk_token_id", None)
        missing = [t for t, i in ids.items() if i is None or (unk is not None and i == unk)]
        if missing:
            raise EosguardError(
                f"the tokenizer has no {' or '.join(missing)} token",
                hint="call eosguard.tokenizer_setup.prepare_tokenizer(tokenizer) first (it adds them and says so)",
            )
        self.im_start_id, self.im_end_id = ids[IM_START], ids[IM_END]
        if bos is None:
            bos = tokenizer_adds_bos(tokenizer)
        self.bos_id: int | None = tokenizer.bos_token_id if bos else None
        control = {_MARK_START: IM_START, _MARK_END: IM_END}
        if self.bos_id is not None:
            control[_MARK_BOS] = tokenizer.bos_token
        self._plain, marker_to_token = _plain_text_tokenizer(tokenizer.backend_tokenizer, control)
        # marker id -> real id, as a lookup table over the plain tokenizer's id space
        size = self._plain.get_vocab_size(with_added_tokens=True)
        self._id_map = np.arange(size, dtype=np.int64)
        for marker_id, token in marker_to_token.items():
            self._id_map[marker_id] = tokenizer.convert_tokens_to_ids(token)
        self._id_map[self._plain.token_to_id(_MARK_SPLIT)] = _DROP

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

    def marked_text(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = False
    ) -> tuple[str, list[tuple[int, int]], list[int]]:
        """The rendered string with control tokens as markers, the trained char spans, and each message's end.

        A trained span runs from the first character of an assistant content through its `<|im_end|>` marker.
        """
        parts: list[str] = [_MARK_BOS] if self.bos_id is not None else []
        pos = len(parts[0]) if parts else 0
        spans: list[tuple[int, int]] = []
        ends: list[int] = []
        for msg, trained in zip(messages, self._supervised(messages), strict=True):
            # The split after an assistant header makes the reply's first token start at the reply, as it does when
            # the model continues a generation prompt that ends with the header.
            header = f"{_MARK_START}{msg.role}\n" + (_MARK_SPLIT if msg.role == "assistant" else "")
            start = pos + len(header)
            stop = start + len(msg.content)
            parts += [header, msg.content, _MARK_END, "\n"]
            if trained:
                spans.append((start, stop + len(_MARK_END)))
            pos = stop + len(_MARK_END) + 1
            ends.append(pos)
        if add_generation_prompt:
            parts.append(f"{_MARK_START}assistant\n")
        return "".join(parts), spans, ends

    def render_text(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
        """The ChatML text the model sees (control tokens written out), e.g. for display."""
        text, _, _ = self.marked_text(messages, add_generation_prompt=add_generation_prompt)
        bos = self.tokenizer.bos_token if self.bos_id is not None else ""
        text = text.replace(_MARK_BOS, bos).replace(_MARK_START, IM_START).replace(_MARK_END, IM_END)
        return text.replace(_MARK_SPLIT, "")

    # -- tokens -------------------------------------------------------------------------------------------------

    def render_batch(self, convs: Sequence[Conversation | Sequence[Message]]) -> list[Rendered]:
        """Render many conversations with one batched encoder call (the fast path for data preparation)."""
        marked = [self.marked_text(c.messages if isinstance(c, Conversation) else c) for c in convs]
        encodings = self._plain.encode_batch([text for text, _, _ in marked], add_special_tokens=False)
        return [
            self._to_rendered(enc, spans, ends, len(text))
            for enc, (text, spans, ends) in zip(encodings, marked, strict=True)
        ]

    def render(self, conv: Conversation | Sequence[Message]) -> Rendered:
        return self.render_batch([conv])[0]

    def _to_rendered(self, enc: Any, spans: list[tuple[int, int]], ends: list[int], text_len: int) -> Rendered:
        ids = self._id_map[np.asarray(enc.ids, dtype=np.int64)]
        n = len(ids)
        located = _locate_by_chars(enc, spans, ends, n, text_len)
        if located is None:  # a span edge no token covers (rare normalizers): fall back to every token's offset
            starts = np.asarray([o[0] for o in enc.offsets], dtype=np.int64).reshape(-1)
            mask = _mask_from_spans(starts, spans)
            message_ends = np.searchsorted(starts, np.asarray(ends), side="left").tolist()
        else:
            mask, message_ends = located
        keep = ids != _DROP
        if not keep.all():  # drop the split markers; message ends move back by the markers before them
            dropped_before = np.concatenate([[0], np.cumsum(~keep)])
            ids, mask = ids[keep], mask[keep]
            message_ends = [e - int(dropped_before[e]) for e in message_ends]
        stops = np.flatnonzero(mask & (ids == self.im_end_id)).tolist()
        return Rendered(input_ids=ids, mask=mask, message_ends=message_ends, stop_positions=stops)

    def prompt_ids(self, messages: Sequence[Message] | Conversation) -> list[int]:
        """Ids of a generation prompt: the messages, then `<|im_start|>assistant\\n` (nothing trained)."""
        msgs = messages.messages if isinstance(messages, Conversation) else messages
        text, _, _ = self.marked_text(msgs, add_generation_prompt=True)
        enc = self._plain.encode(text, add_special_tokens=False)
        ids = self._id_map[np.asarray(enc.ids, dtype=np.int64)]
        return ids[ids != _DROP].tolist()


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


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding plain text with this tokenizer starts with its BOS token (as in pre-training)."""
    if getattr(tokenizer, "bos_token_id", None) is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


# -- over-length policy ---------------------------------------------------------------------------------------


class OverLengthError(EosguardError):
    """An example is longer than max_length under the `error` policy."""


def fit_to_length(r: Rendered, max_length: int, policy: OverLength) -> Rendered | None:
    """Make an example fit `max_length` without ever leaving a supervised turn without its `<|im_end|>`.

    - drop: return None (the caller counts it).
    - truncate: keep whole messages up to the last one that fits; if not even the first supervised assistant
      turn fits, cut its content and close it with a trained `<|im_end|>` (so the model still learns to stop).
      Returns None when not even the prompt before the first supervised turn fits.
    - error: raise OverLengthError.
    """
    n = len(r)
    if n <= max_length:
        return r
    if policy == "drop":
        return None
    if policy == "error":
        raise OverLengthError(f"example of {n} tokens is longer than max_length={max_length}")
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
    """Cut the first supervised turn's content so that it plus its `<|im_end|>` ends at max_length."""
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
    from eosguard.tokenizer_setup import demo_tokenizer

    renderer = ChatMLRenderer(demo_tokenizer())
    conv = conversation(("system", "Be brief."), ("user", "Say hi <|im_end|>"), ("assistant", "Hi!"))
    out = renderer.render(conv)
    print(renderer.render_text(conv.messages))
    for tok_id, trained in zip(out.input_ids.tolist(), out.mask.tolist(), strict=True):
        print(f"{'*' if trained else ' '} {tok_id:6d} {renderer.tokenizer.convert_ids_to_tokens(tok_id)!r}")
