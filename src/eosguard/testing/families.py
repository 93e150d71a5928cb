"""The template families the tests prove eosguard on, declared with what eosguard must read off each.

- `FAMILIES`: template families as each model ships them, rebuilt offline by
  `eosguard.testing.fixtures.family_tokenizer` (on real Mistral vocabularies);
- `TRL_TEMPLATES`: every text chat template the installed `trl` package ships with a `_training` twin, rebuilt on
  SmolLM2's real tokenizer by `eosguard.testing.fixtures.trl_tokenizer`, with how eosguard's trained text differs from
  the twin's `{% generation %}` mask (`DIFFERENCES`, each deliberate and explained).

eosguard's own code reads none of these: it reads templates (`eosguard.chat.templates.ChatTemplate`); tests compare
what it reads with what is declared here.
"""

from __future__ import annotations

from dataclasses import dataclass

from eosguard.chat.families import CHATML_END, CHATML_START

GEMMA_TAGS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>")
QWEN_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")
GPT_OSS_TOKENS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
)

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
OPENHERMES_TEMPLATE = (
    # OpenHermes-2.5-Mistral-7B's ChatML template, as shipped (no BOS, no default system message).
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A chat-template family as a model ships it, rebuilt offline on a vocabulary from `mistral-common`.

    vocab: which tokenizer file the fixture starts from; template: inline Jinja, or "trl:NAME" for the real template
    shipped in TRL's `chat_templates/`, or "mistral-common" for the template Mistral's own library generates for the
    vocabulary, or "gguf" for the template inside the SmolLM2 GGUF; tokens: control tokens
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
    tool_call_end: str | None = None  # what tests expect to close a tool call (None: the template has no tools)


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
            tool_call_end="<|eot_id|>",
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
        Family("mistral-v7", "sp-v7", "mistral-common", (), "<s>", "</s>", None, "</s>", tool_call_end="</s>"),
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
            tool_call_end=CHATML_END,
        ),
        Family(
            "qwen3",
            "tekken",
            "trl:qwen3.jinja",
            ("<|endoftext|>", CHATML_START, CHATML_END, *QWEN_TAGS),
            None,
            CHATML_END,
            "<|endoftext|>",
            CHATML_END,
            tool_call_end=CHATML_END,
        ),
        Family(
            "gpt-oss",
            "tekken",
            "trl:gptoss.jinja",
            GPT_OSS_TOKENS,
            "<|startoftext|>",
            "<|return|>",
            "<|endoftext|>",
            "<|return|>",
            tool_call_end="<|call|>",
        ),
        Family("smollm2", "smollm2", "gguf", (), CHATML_START, CHATML_END, CHATML_END, CHATML_END),
    )
}
"""The families the tests prove eosguard on, ids and all: ChatML/OpenHermes-2.5, Llama-3.1, Gemma 3, Phi-3, Mistral
instruct v3 and v7 (v7 with tools, the template mistral-common generates), Qwen2.5, Qwen3, gpt-oss, and SmolLM2's real
tokenizer."""


@dataclass(frozen=True)
class TrlTemplate:
    """A chat template TRL ships with a `_training` twin (`trl/chat_templates/NAME.jinja`), as the tests rebuild it.

    bos / eos: as the model ships them; tags: control tokens written as plain tags (`<think>`), added besides the
    `<|...|>` / `[...]` tokens read off the template; system: the template takes a system message; differences: how
    eosguard's trained text differs from the twin's `{% generation %}` mask (keys of `DIFFERENCES`).
    """

    name: str
    model: str
    bos: str | None
    eos: str
    tags: tuple[str, ...] = ()
    system: bool = True
    differences: tuple[str, ...] = ()


DIFFERENCES: dict[str, str] = {
    "newline": "TRL also trains the newline the template writes after the stop token (not generated: inference stops "
    "at the token)",
    "header": "TRL also trains the assistant header (`<|start|>assistant`, `<｜Assistant｜>`, Qwen2.5's newline), "
    "which the generation prompt already writes",
    "prompt-block": "TRL also trains the reasoning-block text the generation prompt already writes (`<think>\\n`, "
    "`<think>\\n\\n</think>\\n\\n`)",
    "trailing-eos": "TRL also trains the eos the template writes after the last reply only; eosguard stops at "
    "`<|end|>`, as every reply does",
    "history-closer": "TRL trains earlier replies as history renders them (closed by `<|end|>`, not a stop token); "
    "eosguard trains each as the model emits it (`<|return|>`), in an example of its own",
    "closed-block": "the generation prompt opens `<think>\\n` and the template renders no reasoning: eosguard trains "
    "the reply after the block closed empty (`\\n</think>\\n\\n`); TRL trains the header and the answer, a sequence "
    "inference never produces",
}
"""How eosguard's trained text may differ from TRL's `_training` twins, and why (the README's templates page)."""

_R1 = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")

TRL_TEMPLATES: dict[str, TrlTemplate] = {
    t.name: t
    for t in (
        TrlTemplate("cohere", "Aya Expanse (Cohere)", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
        TrlTemplate("cohere2", "Command R7B / Aya (Cohere2)", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
        TrlTemplate(
            "deepseek_r1_distill", "DeepSeek-R1 distills", *_R1, ("<think>", "</think>"), differences=("closed-block",)
        ),
        TrlTemplate("deepseekv3", "DeepSeek-V3", *_R1, ("<think>", "</think>"), differences=("closed-block",)),
        TrlTemplate("diffusion_gemma", "DiffusionGemma", "<bos>", "<eos>", differences=("newline",)),
        TrlTemplate("gemma", "Gemma / Gemma 2", "<bos>", "<eos>", GEMMA_TAGS, system=False, differences=("newline",)),
        TrlTemplate("gemma3", "Gemma 3", "<bos>", "<eos>", GEMMA_TAGS, differences=("newline",)),
        TrlTemplate(
            "glm4moe",
            "GLM-4.5 (MoE)",
            None,
            "<|endoftext|>",
            (
                "<think>",
                "</think>",
                "<tool_call>",
                "</tool_call>",
                "<arg_key>",
                "</arg_key>",
                "<arg_value>",
                "</arg_value>",
                "<tool_response>",
                "</tool_response>",
            ),
        ),
        TrlTemplate("gptoss", "gpt-oss", "<|startoftext|>", "<|return|>", differences=("header", "history-closer")),
        TrlTemplate("lfm2", "LFM2", "<|startoftext|>", CHATML_END, differences=("newline",)),
        TrlTemplate("lfm2_v2", "LFM2 (later revision)", "<|startoftext|>", CHATML_END, differences=("newline",)),
        TrlTemplate("llama3", "Llama 3", "<|begin_of_text|>", "<|eot_id|>"),
        TrlTemplate("muse_glimmer", "Muse Glimmer", None, "<|eot|>", differences=("header",)),
        *(
            TrlTemplate(n, m, None, CHATML_END, QWEN_TAGS, differences=("newline", "prompt-block"))
            for n, m in (
                ("nemotron_3_nano", "Nemotron 3 Nano"),
                ("nemotron_3_super", "Nemotron 3 Super"),
                ("nemotron_3_ultra", "Nemotron 3 Ultra"),
                ("nemotron_3_5_lightning", "Nemotron 3.5 Lightning"),
            )
        ),
        TrlTemplate("phi3", "Phi-3", "<s>", "<|endoftext|>", differences=("newline", "trailing-eos")),
        TrlTemplate("phi3_5", "Phi-3.5", "<s>", "<|endoftext|>", differences=("newline", "trailing-eos")),
        TrlTemplate("qwen2_5", "Qwen2.5", None, CHATML_END, QWEN_TAGS, differences=("header", "newline")),
        TrlTemplate("qwen2_5_vl", "Qwen2.5-VL (text)", None, CHATML_END, differences=("newline",)),
        TrlTemplate("qwen3", "Qwen3", None, CHATML_END, QWEN_TAGS, differences=("newline",)),
        TrlTemplate(
            "qwen3_instruct_2507", "Qwen3-Instruct-2507", None, CHATML_END, QWEN_TAGS, differences=("newline",)
        ),
        TrlTemplate("qwen3_vl", "Qwen3-VL (text)", None, CHATML_END, QWEN_TAGS, differences=("newline",)),
        *(
            TrlTemplate(n, m, None, CHATML_END, QWEN_TAGS, differences=("newline", "prompt-block"))
            for n, m in (
                ("qwen3_5_think", "Qwen3.5 (thinking)"),
                ("qwen3_5_nothink", "Qwen3.5 (no thinking)"),
                ("qwen3_6", "Qwen3.6"),
                ("qwen3_8", "Qwen3.8"),
            )
        ),
    )
}
"""Every text template with a `_training` twin in TRL 1.16 (the image templates idefics3, llava_next and smolvlm
take image/text content parts only and are out of scope)."""
