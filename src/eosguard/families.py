"""Template families: the one module that knows their token strings.

- ChatML (`chatml_template`), which eosguard installs when a tokenizer has no chat template or the config asks;
- the reserved tokens that make safe pads (`RESERVED_PAD_CANDIDATES`), tried by `prepare_tokenizer`;
- `FAMILIES`: the template families the tests prove eosguard on, as each model ships them, rebuilt offline by
  `eosguard.fixtures.family_tokenizer`. eosguard's own code reads none of these: it reads templates
  (`eosguard.templates.ChatTemplate`); tests compare what it reads with what is declared here.

Run as:
    python -m eosguard.families   # lists the families and their declared end-of-turn tokens
"""

from __future__ import annotations

from dataclasses import dataclass

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

MISTRAL_V3_TEMPLATE = (
    # Mistral-7B-Instruct-v0.3's template without tools: the system message joins the *last* user message.
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant') }}"
    "{%- endif %}{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] | trim + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported') }}{%- endif %}{%- endfor %}"
)
MISTRAL_V7_TEMPLATE = (
    # The v7 instruct format (Mistral-Small/Large 2411+), without tools: [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT].
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported') }}{%- endif %}"
    "{%- endfor %}"
)
OPENHERMES_TEMPLATE = (
    # OpenHermes-2.5-Mistral-7B's ChatML template, as shipped (no BOS, no default system message).
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A chat-template family as a model ships it, rebuilt offline on a vocabulary from `mistral-common`.

    vocab: which tokenizer file the fixture starts from; template: inline Jinja, or "trl:NAME" for the real template
    shipped in TRL's `chat_templates/`, or "gguf" for the template inside the SmolLM2 GGUF; tokens: control tokens
    added to the vocabulary, in id order; bos / eos / pad as the instruct model ships them (pad None: no pad);
    base_eos: the eos of the family's *base* model config, where it differs; end_of_turn: what tests expect
    eosguard to read off the template.
    """

    name: str
    vocab: str
    template: str
    tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    end_of_turn: str
    base_eos: str | None = None
    supports_system: bool = True


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("chatml", "sp-v1", OPENHERMES_TEMPLATE, (CHATML_END, CHATML_START), "<s>", CHATML_END, None, CHATML_END),
        Family(
            "llama3",
            "tekken",
            "trl:llama3_1.jinja",
            (
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|finetune_right_pad_id|>",
            ),
            "<|begin_of_text|>",
            "<|eot_id|>",
            None,
            "<|eot_id|>",
            base_eos="<|end_of_text|>",
        ),
        Family(
            "gemma",
            "sp-v1",
            "trl:gemma3.jinja",
            ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
            "<bos>",
            "<eos>",
            "<pad>",
            "<end_of_turn>",
        ),
        Family(
            "phi3",
            "sp-v1",
            "trl:phi3.jinja",
            ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
            "<s>",
            "<|endoftext|>",
            "<|endoftext|>",
            "<|end|>",
        ),
        Family("mistral-v3", "sp-v3", MISTRAL_V3_TEMPLATE, (), "<s>", "</s>", None, "</s>", supports_system=False),
        Family("mistral-v7", "sp-v7", MISTRAL_V7_TEMPLATE, (), "<s>", "</s>", None, "</s>"),
        Family(
            "qwen2.5",
            "tekken",
            "trl:qwen2_5.jinja",
            ("<|endoftext|>", CHATML_START, CHATML_END),
            None,
            CHATML_END,
            "<|endoftext|>",
            CHATML_END,
            base_eos="<|endoftext|>",
        ),
        Family("smollm2", "smollm2", "gguf", (), CHATML_START, CHATML_END, CHATML_END, CHATML_END),
    )
}
"""The seven families the tests prove eosguard on (the issue's list): ChatML/OpenHermes-2.5, Llama-3.1, Gemma 3,
Phi-3, Mistral instruct v3 and v7, Qwen2.5, and SmolLM2's real tokenizer."""


if __name__ == "__main__":
    for fam in FAMILIES.values():
        print(f"{fam.name:12} end of turn {fam.end_of_turn!r:18} eos {fam.eos!r:18} pad {fam.pad!r}")
