"""Loading a tokenizer and a model from a folder or hub id, safely: fast tokenizers only, safetensors weights only,
no code from the repository unless asked; every failure an EosguardError with the reason (exit 2).

Run as:
    eosguard doctor --tokenizer PATH
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError


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


def load_model(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    dtype: Any = None,
    attn_implementation: str | None = None,
) -> Any:
    """Load a causal LM from a folder or hub id: safetensors only, no remote code unless asked."""
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype, **extra
        )
    except (OSError, ValueError) as exc:
        raise EosguardError(
            f"cannot load a model from {name_or_path!r}: {str(exc).splitlines()[0]}",
            hint="eosguard loads safetensors weights only; convert .bin checkpoints first",
        ) from None
