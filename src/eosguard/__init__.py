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
    "IGNORE_INDEX": "eosguard.render",
    "ChatRenderer": "eosguard.render",
    "ChatMLRenderer": "eosguard.render",
    "labels_from_mask": "eosguard.render",
    "ChatTemplate": "eosguard.templates",
    "chatml_template": "eosguard.families",
    "PackedCollator": "eosguard.collate",
    "PadCollator": "eosguard.collate",
    "Conversation": "eosguard.conversations",
    "Message": "eosguard.conversations",
    "conversation": "eosguard.conversations",
    "load_conversations": "eosguard.records",
    "diagnose": "eosguard.doctor",
    "evaluate_stopping": "eosguard.evaluate",
    "guard": "eosguard.guard",
    "prepare_tokenizer": "eosguard.tokenizer_setup",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eosguard' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
