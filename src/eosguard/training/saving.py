"""A model folder that stops by itself: safetensors weights, the tokenizer with its chat template and a pad distinct
from every stop token, and a `generation_config.json` that stops on every stop token of the template, so plain
transformers (`generate()` with no eos argument) and engines that read the folder (vLLM) stop where training taught.

Run as:
    eosguard train CONFIG.yaml   # saves output_dir/model, a folder that stops by itself
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import GenerationConfig


def stop_generation_config(model: Any, tokenizer: Any) -> GenerationConfig:
    """A generation config that stops on every stop token of the chat template: the end-of-turn token first (the
    tokenizer's eos after `prepare_tokenizer`), then the others the template closes replies with (a tool call's
    `<|call|>`, `<|eom_id|>`, ...), keeping any other eos ids the model had."""
    from eosguard.chat.templates import ChatTemplate

    stops = [tokenizer.eos_token_id, *ChatTemplate(tokenizer).stop_ids]
    old = model.generation_config.eos_token_id if model.generation_config is not None else None
    old_ids = [old] if isinstance(old, int) else list(old or [])
    cfg = (
        GenerationConfig.from_model_config(model.config) if model.generation_config is None else model.generation_config
    )
    cfg.eos_token_id = list(dict.fromkeys([*stops, *old_ids]))
    cfg.pad_token_id = tokenizer.pad_token_id
    cfg.bos_token_id = tokenizer.bos_token_id
    return cfg


def save_model_folder(model: Any, tokenizer: Any, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save a model folder that stops by itself with plain transformers (see the module doc).

    Written next to its destination first and renamed into place, so an interrupted save never leaves a
    half-written folder where a complete one is expected.
    """
    from eosguard.base.files import atomic_folder

    out = Path(out_dir)
    model.generation_config = stop_generation_config(model, tokenizer)
    model.config.eos_token_id = model.generation_config.eos_token_id[0]
    model.config.pad_token_id = tokenizer.pad_token_id
    with atomic_folder(out) as staging:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if extra is not None:
            (staging / "eosguard.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    return out
