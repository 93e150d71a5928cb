"""eosguard: ChatML supervised fine-tuning that guarantees the model learns to stop.

    from eosguard import ChatMLRenderer, PadCollator, guard, prepare_tokenizer, diagnose

Run as:
    eosguard --help
"""

from eosguard.chatml import IGNORE_INDEX, ChatMLRenderer, chatml_template, labels_from_mask
from eosguard.collate import PackedCollator, PadCollator
from eosguard.conversations import Conversation, Message, conversation, load_conversations
from eosguard.doctor import diagnose
from eosguard.evaluate import evaluate_stopping
from eosguard.guard import guard
from eosguard.tokenizer_setup import prepare_tokenizer

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "ChatMLRenderer",
    "Conversation",
    "Message",
    "PackedCollator",
    "PadCollator",
    "chatml_template",
    "conversation",
    "diagnose",
    "evaluate_stopping",
    "guard",
    "labels_from_mask",
    "load_conversations",
    "prepare_tokenizer",
]
