"""Tokenizer setup for ChatML SFT: stop token, pad token and chat template, each choice explicit and reported.

`prepare_tokenizer(tokenizer)` makes any Hugging Face fast tokenizer ready for training with eosguard:

1. adds `<|im_start|>` / `<|im_end|>` when missing (then the model's embeddings must grow: the report says so);
2. makes `<|im_end|>` the eos token, the token that ends an assistant turn;
3. picks a pad token that is never a token the model must learn. In order: an existing pad distinct from the
   end-of-turn and eos tokens; an unused reserved token (`<|finetune_right_pad_id|>`, `<|reserved_special_token_0|>`,
   `<pad>`, ...); the unk token; a new `<pad>` (embeddings grow). It never silently falls back to eos, which is how
   TRL-style setups erase every `<|im_end|>` label;
4. sets the ChatML chat template, so the saved tokenizer formats prompts at inference exactly as in training.

It also builds the demo tokenizers from the real Mistral-7B SentencePiece model shipped inside `mistral-common`
(no model hub needed): `openhermes_tokenizer()` reproduces OpenHermes-2.5-Mistral-7B's setup (`<|im_end|>` = 32000,
`<|im_start|>` = 32001, eos = `<|im_end|>`, no pad token, `padding_side="left"`).

Run as:
    python -m eosguard.tokenizer_setup PATH_OR_HUB_ID    # prints what prepare_tokenizer would change
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eosguard.chatml import IM_END, IM_START, chatml_template, tokenizer_adds_bos
from eosguard.errors import EosguardError

# Tokens that tokenizers reserve and pre-training never used: safe pads (checked in this order).
RESERVED_PAD_CANDIDATES: tuple[str, ...] = (
    "<|finetune_right_pad_id|>",
    "<|finetune_right_pad|>",
    "<pad>",
    "[PAD]",
    "<|pad|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<SPECIAL_10>",
)

PadKind = Literal["existing", "reserved", "unk", "new"]


@dataclass
class SetupReport:
    """What `prepare_tokenizer` changed and why; `embeddings_must_grow` means call `model.resize_token_embeddings`."""

    added_tokens: list[str] = field(default_factory=list)
    end_of_turn: str = IM_END
    end_of_turn_id: int = -1
    eos_changed_from: str | None = None
    pad_token: str = ""
    pad_token_id: int = -1
    pad_kind: PadKind = "existing"
    template_set: bool = False
    writes_bos: bool = False
    vocab_size: int = 0

    @property
    def embeddings_must_grow(self) -> bool:
        return bool(self.added_tokens)

    def lines(self) -> list[str]:
        out = []
        if self.added_tokens:
            out.append(
                f"added {', '.join(self.added_tokens)}: new rows -> resize the model's embeddings to {self.vocab_size}"
                " and train them (LoRA: modules_to_save or trainable_token_indices)"
            )
        out.append(f"end-of-turn token: {self.end_of_turn} (id {self.end_of_turn_id})")
        if self.eos_changed_from is not None:
            out.append(f"eos token changed from {self.eos_changed_from} to {self.end_of_turn}")
        why = {
            "existing": "the tokenizer's own pad token, distinct from the end-of-turn token",
            "reserved": "an unused reserved token, so no embedding row is added",
            "unk": "the unk token, which ChatML training data never needs to predict",
            "new": "a new token: no distinct pad, reserved or unk token existed",
        }[self.pad_kind]
        out.append(f"pad token: {self.pad_token} (id {self.pad_token_id}) - {why}")
        if self.template_set:
            out.append(f"chat template set to ChatML{' (writes BOS first)' if self.writes_bos else ''}")
        return out


def add_control_tokens(tokenizer: Any, tokens: list[str]) -> None:
    """Add special (never split, never normalized) tokens; new ids follow the current vocabulary in order."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def _token_id(tokenizer: Any, token: str) -> int | None:
    """The id of `token` if the tokenizer has it as a single token, else None (never the unk id)."""
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def _stop_ids(tokenizer: Any) -> set[int]:
    ids = {_token_id(tokenizer, IM_END)}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def choose_pad(tokenizer: Any) -> tuple[str, PadKind]:
    """The pad token to use, by the documented order; the pad is never the end-of-turn or eos token."""
    stop = _stop_ids(tokenizer)
    if tokenizer.pad_token is not None and tokenizer.pad_token_id not in stop:
        return tokenizer.pad_token, "existing"
    for candidate in RESERVED_PAD_CANDIDATES:
        cid = _token_id(tokenizer, candidate)
        if cid is not None and cid not in stop:
            return candidate, "reserved"
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in stop:
        return tokenizer.unk_token, "unk"
    return "<pad>", "new"


def prepare_tokenizer(tokenizer: Any, *, set_template: bool = True, padding_side: str = "right") -> SetupReport:
    """Make `tokenizer` ready for ChatML SFT in place and report every change (see the module doc).

    Example:
        >>> tok = openhermes_tokenizer(pad="eos")          # the setup from the bug report
        >>> rep = prepare_tokenizer(tok)
        >>> rep.pad_token, rep.pad_kind, tok.pad_token_id != tok.eos_token_id
        ('<unk>', 'unk', True)
    """
    if not getattr(tokenizer, "is_fast", False):
        raise EosguardError("eosguard needs a fast (Rust `tokenizers`) tokenizer", hint="load it with use_fast=True")
    report = SetupReport()
    missing = [t for t in (IM_START, IM_END) if _token_id(tokenizer, t) is None]
    if missing:
        add_control_tokens(tokenizer, missing)
        report.added_tokens += missing
    if tokenizer.eos_token != IM_END:
        report.eos_changed_from = tokenizer.eos_token
        tokenizer.eos_token = IM_END
    pad, kind = choose_pad(tokenizer)
    if kind == "new":
        tokenizer.add_special_tokens({"pad_token": pad})
        report.added_tokens.append(pad)
    else:
        tokenizer.pad_token = pad
    tokenizer.padding_side = padding_side
    report.pad_token, report.pad_kind, report.pad_token_id = pad, kind, tokenizer.pad_token_id
    report.end_of_turn_id = _token_id(tokenizer, IM_END)  # type: ignore[assignment]
    if set_template:
        report.writes_bos = tokenizer_adds_bos(tokenizer)
        tokenizer.chat_template = chatml_template(tokenizer.bos_token if report.writes_bos else None)
        report.template_set = True
    report.vocab_size = len(tokenizer)
    return report


# -- loading ---------------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """Load a fast tokenizer from a folder or hub id; only tokenizer files are read. Errors become EosguardError."""
    from transformers import AutoTokenizer

    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().exists():
        raise EosguardError(f"{name_or_path}: no such tokenizer folder")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        local = Path(name_or_path).exists()
        raise EosguardError(
            f"cannot load a tokenizer from {name_or_path!r}: {str(exc).splitlines()[0]}",
            hint=None if local else "is it a folder with tokenizer files, or a hub id reachable from here?",
        ) from None
    if not getattr(tok, "is_fast", False):
        raise EosguardError(f"{name_or_path!r} has no fast tokenizer (tokenizer.json); eosguard needs one")
    return tok


def find_end_of_turn(tokenizer: Any, chat_template: str | None = None) -> tuple[str, int] | None:
    """The token that closes assistant turns in the tokenizer's chat template, found by rendering, never assumed.

    Renders a probe conversation and returns the first added (control) token that follows the assistant's
    content, e.g. `<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma, `</s>` for
    Mistral's [INST] template. None when the template writes no control token after the assistant's content.
    """
    probe = "EOSGUARD_PROBE_ANSWER"
    messages = [{"role": "user", "content": "EOSGUARD_PROBE_QUESTION"}, {"role": "assistant", "content": probe}]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
    except Exception:  # no template, or a template that rejects the probe
        return None
    tail = text[text.rfind(probe) + len(probe) :] if probe in text else ""
    rest = tail.lstrip()  # whitespace may stand between the content and the stop token
    for token, tid in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: -len(kv[0])):
        if token.strip() and rest.startswith(token):
            return token, tid
    return None


# -- demo tokenizers built from mistral-common's files ---------------------------------------------------------

DemoPad = Literal["none", "eos", "unk", "dedicated"]
OPENHERMES_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def mistral_sentencepiece_path() -> Path:
    """The Mistral-7B v0.1 SentencePiece model shipped inside the `mistral-common` package."""
    try:
        import mistral_common
    except ImportError:
        raise EosguardError("the demo tokenizer needs `mistral-common`", hint="pip install 'eosguard[demo]'") from None
    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.exists():
        raise EosguardError(f"mistral-common has no {path.name} (looked in {path.parent})")
    return path


def _cache_dir() -> Path:
    import os

    root = Path(os.environ.get("EOSGUARD_CACHE", Path.home() / ".cache" / "eosguard"))
    return root


def _cached_tokenizer(source: Path, name: str, build: Callable[[], Any]) -> Any:
    """Load the tokenizer converted from `source` out of the cache, building and saving it once when missing."""
    from transformers import AutoTokenizer

    from eosguard.files import atomic_folder

    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = _cache_dir() / f"{name}-{digest}"
    if not (cached / "tokenizer.json").exists():
        tok = build()
        with atomic_folder(cached) as staging:
            tok.save_pretrained(str(staging))
    return AutoTokenizer.from_pretrained(str(cached))


def mistral_base_tokenizer() -> Any:
    """The Mistral-7B v0.1 tokenizer (32,000 tokens, `<s>`/`</s>`/`<unk>`), converted once and cached on disk."""
    sp = mistral_sentencepiece_path()

    def build() -> Any:
        import shutil
        import tempfile

        from transformers import LlamaTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(sp, Path(tmp) / "tokenizer.model")
            tok = LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False, legacy=False)
        tok.padding_side = "left"
        return tok

    return _cached_tokenizer(sp, "mistral-7b-v0.1", build)


def tekken_tokenizer() -> Any:
    """Mistral's Tekken tokenizer (byte-level BPE, 131,072 tokens) from `mistral-common`, converted once and cached.

    A second, very different tokenizer family for tests: byte-level BPE with a regex pre-tokenizer, no BOS added
    on encode, and an existing `<pad>` token.
    """
    from transformers.integrations.mistral import convert_tekken_tokenizer

    path = mistral_sentencepiece_path().parent / "tekken_240911.json"
    if not path.exists():
        raise EosguardError(f"mistral-common has no {path.name} (looked in {path.parent})")
    return _cached_tokenizer(path, "tekken-240911", lambda: convert_tekken_tokenizer(str(path)))


def openhermes_tokenizer(pad: DemoPad = "none") -> Any:
    """OpenHermes-2.5-Mistral-7B's tokenizer setup on the real Mistral vocabulary.

    pad: "none" as shipped; "eos" the setup from the bug report (pad = eos = `<|im_end|>`); "unk" the usual fix;
    "dedicated" a new `<pad>` token (id 32002).
    """
    tok = mistral_base_tokenizer()
    add_control_tokens(tok, [IM_END, IM_START])
    tok.eos_token = IM_END
    tok.chat_template = OPENHERMES_TEMPLATE
    tok.padding_side = "left"
    if pad == "eos":
        tok.pad_token = tok.eos_token
    elif pad == "unk":
        tok.pad_token = tok.unk_token
    elif pad == "dedicated":
        tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def demo_tokenizer() -> Any:
    """The OpenHermes-style tokenizer after `prepare_tokenizer`: what eosguard trains with in the demo and tests."""
    tok = openhermes_tokenizer()
    prepare_tokenizer(tok)
    return tok


if __name__ == "__main__":
    t = load_tokenizer(sys.argv[1]) if len(sys.argv) > 1 else openhermes_tokenizer()
    for line in prepare_tokenizer(t).lines():
        print(line)
