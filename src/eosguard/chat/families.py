"""The token strings eosguard itself writes: ChatML (`chatml_template`), installed when a tokenizer has no chat
template or the config asks for it, and the reserved tokens that make safe pads (`RESERVED_PAD_CANDIDATES`), tried by
`prepare_tokenizer`. Everything else is read off a tokenizer's own template (`eosguard.chat.templates`); the families
the tests prove eosguard on are declared in `eosguard.testing.families`.
"""

from __future__ import annotations

CHATML_START = "<|im_start|>"
CHATML_END = "<|im_end|>"

# Tokens that tokenizers reserve and pre-training never used: safe pads (tried in this order).
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


def chatml_template(bos_token: str | None) -> str:
    """The ChatML Jinja template eosguard installs when a tokenizer has none (or the config asks for ChatML).

    `bos_token` is written once at the start when the model was pre-trained with one (Mistral, Llama), so
    `apply_chat_template(..., tokenize=True)` needs no post-processor.
    """
    head = "{{ bos_token }}" if bos_token else ""
    return (
        head + "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


CHATML_TOKENS: tuple[str, ...] = (CHATML_START, CHATML_END)
"""The control tokens `chatml_template` needs (added to a tokenizer that lacks them)."""
