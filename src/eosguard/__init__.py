"""eosguard: supervised fine-tuning of chat models that guarantees the model learns to stop.

    from eosguard import ChatRenderer, PadCollator, guard, prepare_tokenizer, diagnose

Names are imported on first use, so `import eosguard` (and every `eosguard` command) loads only what it needs.

Run as:
    eosguard --help
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "IGNORE_INDEX": "eosguard.chat.render",
    "ChatRenderer": "eosguard.chat.render",
    "ChatMLRenderer": "eosguard.chat.render",
    "labels_from_mask": "eosguard.chat.render",
    "ChatTemplate": "eosguard.chat.templates",
    "chatml_template": "eosguard.chat.families",
    "PackedCollator": "eosguard.training.collate",
    "PadCollator": "eosguard.training.collate",
    "Conversation": "eosguard.data.conversations",
    "Message": "eosguard.data.conversations",
    "conversation": "eosguard.data.conversations",
    "load_conversations": "eosguard.data.records",
    "diagnose": "eosguard.checks.doctor",
    "evaluate_stopping": "eosguard.checks.evaluate",
    "guard": "eosguard.checks.guard",
    "prepare_tokenizer": "eosguard.chat.tokenizer_setup",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eosguard' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
