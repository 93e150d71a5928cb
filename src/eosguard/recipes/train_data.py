"""What the data phase of `eosguard train` hands on, whatever the method: `TrainData`.

Run as:
    eosguard train CONFIG.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eosguard.chat.examples import PrepStats
from eosguard.chat.preference import PreferenceStats
from eosguard.chat.render import ChatRenderer
from eosguard.chat.tokenizer_setup import SetupReport
from eosguard.data.conversations import Conversation
from eosguard.data.preferences import Preference


@dataclass
class TrainData:
    """What the data phase hands on: the prepared tokenizer, training examples (SFT: rows of ids and labels; DPO /
    KTO: TRL's preference rows, a `datasets.Dataset`) and held-out conversations, with the data's counts."""

    tokenizer: Any
    setup: SetupReport
    conversations: list[Conversation]
    eval_conversations: list[Conversation]
    examples: Sequence[dict[str, Any]]  # a list, a prepared folder's examples read on demand, or preference rows
    load_summary: str
    prep: PrepStats | PreferenceStats
    tools: tuple[dict[str, Any], ...] | None = None  # offered in conversations that bring none (data.tools)
    preferences: Sequence[Preference] = ()  # DPO / KTO: the records read (the doctor audits their rows)

    def renderer(self) -> ChatRenderer:
        """The renderer of held-out prompts: this run's tokenizer and default tools."""
        return ChatRenderer(self.tokenizer, tools=self.tools)


__all__ = ["TrainData"]
