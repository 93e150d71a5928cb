"""Tokenizer setup for SFT: template, stop token and pad token, each choice explicit and reported.

`prepare_tokenizer(tokenizer)` makes any Hugging Face fast tokenizer ready for training with eosguard:

1. the chat template: the tokenizer's own when it has one (a Llama-3-Instruct fine-tune stays in Llama-3 format),
   ChatML when it has none or `template="chatml"` is asked for (then `<|im_start|>` / `<|im_end|>` are added when
   missing, and the model's embeddings must grow: the report says so);
2. template arguments (`enable_thinking=false`, ...), written into the template as its defaults, so training,
   evaluation and every engine that reads the saved tokenizer render alike;
3. the end-of-turn token, read off the template (`eosguard.chat.templates.ChatTemplate`), never assumed; it becomes the
   eos token, the token that ends an assistant turn (the template's other stop tokens, such as a tool call's,
   go to the saved generation config);
4. a pad token that is never a token the model must learn. In order: an existing pad distinct from the end-of-turn
   and eos tokens; an unused reserved token (`<|finetune_right_pad_id|>`, `<pad>`, ...); the unk token; a new
   `<pad>` (embeddings grow). It never silently falls back to eos, which is how TRL-style setups erase every
   end-of-turn label.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/   # prints every setup choice
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from eosguard.chat.families import CHATML_TOKENS, RESERVED_PAD_CANDIDATES, chatml_template
from eosguard.chat.template_args import with_arguments
from eosguard.chat.templates import ChatTemplate, require_fast

PadKind = Literal["existing", "reserved", "unk", "new", "kept"]
TemplateChoice = Literal["auto", "chatml"]


@dataclass
class SetupReport:
    """What `prepare_tokenizer` changed and why; `embeddings_must_grow` means call `model.resize_token_embeddings`."""

    added_tokens: list[str] = field(default_factory=list)
    template: Literal["own", "chatml"] = "own"
    end_of_turn: str = ""
    end_of_turn_id: int = -1
    stop_tokens: list[str] = field(default_factory=list)
    template_args: dict[str, Any] = field(default_factory=dict)
    eos_changed_from: str | None = None
    pad_token: str = ""
    pad_token_id: int = -1
    pad_kind: PadKind = "existing"
    writes_bos: bool = False
    vocab_size: int = 0

    @property
    def embeddings_must_grow(self) -> bool:
        return bool(self.added_tokens)

    def lines(self) -> list[str]:
        out = []
        if self.template == "chatml":
            out.append(f"chat template set to ChatML{' (writes BOS first)' if self.writes_bos else ''}")
        else:
            out.append("chat template: the tokenizer's own")
        if self.added_tokens:
            out.append(
                f"added {', '.join(self.added_tokens)}: new rows -> resize the model's embeddings to {self.vocab_size}"
                " and train them (LoRA: modules_to_save or trainable_token_indices)"
            )
        if self.template_args:
            out.append(f"template arguments (written into the template as its defaults): {self.template_args}")
        out.append(f"end-of-turn token (read off the template): {self.end_of_turn} (id {self.end_of_turn_id})")
        others = [t for t in self.stop_tokens if t != self.end_of_turn]
        if others:
            out.append(f"other stop tokens of this template (tool calls, ...): {', '.join(others)}")
        if self.eos_changed_from is not None:
            out.append(f"eos token changed from {self.eos_changed_from} to {self.end_of_turn}")
        why = {
            "existing": "the tokenizer's own pad token, distinct from the end-of-turn token",
            "reserved": "an unused reserved token, so no embedding row is added",
            "unk": "the unk token, which chat training data never needs to predict",
            "new": "a new token: no distinct pad, reserved or unk token existed",
            "kept": "kept as it was: no existing token can pad apart from the stop tokens, and a new one would change "
            "the embeddings' shape (a served model needs no pad; training adds one)",
        }[self.pad_kind]
        out.append(f"pad token: {self.pad_token} (id {self.pad_token_id}) - {why}")
        return out


def _token_id(tokenizer: Any, token: str) -> int | None:
    """The id of `token` if the tokenizer has it as a single token, else None (never the unk id)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # one lookup, where get_vocab() copies the whole vocabulary
        return backend.token_to_id(token)
    return tokenizer.get_vocab().get(token)


def choose_pad(tokenizer: Any, stop_ids: set[int]) -> tuple[str, PadKind]:
    """The pad token to use, by the documented order; the pad is never one of `stop_ids`."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id not in stop_ids:
        return tokenizer.pad_token, "existing"
    vocab = tokenizer.get_vocab()  # built once: a 131k-token vocabulary is a dict copy per call
    for candidate in RESERVED_PAD_CANDIDATES:
        cid = vocab.get(candidate)
        if cid is not None and cid not in stop_ids:
            return candidate, "reserved"
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in stop_ids:
        return tokenizer.unk_token, "unk"
    return "<pad>", "new"


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding plain text with this tokenizer starts with its BOS token (as in pre-training)."""
    if getattr(tokenizer, "bos_token_id", None) is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def add_control_tokens(tokenizer: Any, tokens: list[str]) -> None:
    """Add special (never split, never normalized) tokens; new ids follow the current vocabulary in order."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def prepare_tokenizer(
    tokenizer: Any,
    *,
    template: TemplateChoice = "auto",
    template_args: dict[str, Any] | None = None,
    padding_side: str = "right",
    add_pad: bool = True,
    template_read: ChatTemplate | None = None,
) -> SetupReport:
    """Make `tokenizer` ready for SFT in place and report every change (see the module doc). add_pad=False never adds
    a pad token (no new embedding row): where only a new one would do, the pad is kept as it was (`eosguard fix`).
    template_read: the tokenizer's template, read already (used where the template is unchanged here).

    Example:
        >>> from eosguard.testing.fixtures import family_tokenizer, openhermes_tokenizer
        >>> tok = openhermes_tokenizer(pad="eos")          # the setup from the bug report
        >>> rep = prepare_tokenizer(tok)
        >>> rep.pad_token, rep.pad_kind, tok.pad_token_id != tok.eos_token_id
        ('<unk>', 'unk', True)
        >>> rep = prepare_tokenizer(family_tokenizer("llama3", pad="eot"))   # unsloth#416's setup
        >>> rep.template, rep.end_of_turn, rep.pad_token
        ('own', '<|eot_id|>', '<|finetune_right_pad_id|>')
    """
    require_fast(tokenizer)
    report = SetupReport()
    original_eos = tokenizer.eos_token_id
    if template == "chatml" or not getattr(tokenizer, "chat_template", None):
        missing = [t for t in CHATML_TOKENS if _token_id(tokenizer, t) is None]
        if missing:
            add_control_tokens(tokenizer, missing)
            report.added_tokens += missing
        report.writes_bos = tokenizer_adds_bos(tokenizer)
        tokenizer.chat_template = chatml_template(tokenizer.bos_token if report.writes_bos else None)
        report.template = "chatml"
    if template_args:
        tokenizer.chat_template = with_arguments(tokenizer.chat_template, template_args)
        report.template_args = dict(template_args)
    same = template_read is not None and template_read.source == tokenizer.chat_template
    chat = template_read if same else ChatTemplate(tokenizer)
    report.end_of_turn, report.end_of_turn_id = chat.require_end_of_turn()
    report.stop_tokens = chat.stop_tokens
    if tokenizer.eos_token != report.end_of_turn:
        report.eos_changed_from = tokenizer.eos_token
        tokenizer.eos_token = report.end_of_turn
    stop_ids = {i for i in (original_eos, report.end_of_turn_id) if i is not None}
    pad, kind = choose_pad(tokenizer, stop_ids)
    if kind == "new" and not add_pad:
        pad, kind = tokenizer.pad_token, "kept"
    elif kind == "new":
        tokenizer.add_special_tokens({"pad_token": pad})
        report.added_tokens.append(pad)
    else:
        tokenizer.pad_token = pad
    tokenizer.padding_side = padding_side
    report.pad_token, report.pad_kind, report.pad_token_id = pad, kind, tokenizer.pad_token_id
    report.vocab_size = len(tokenizer)
    return report
