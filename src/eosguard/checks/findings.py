"""Every doctor finding, declared once: id, severity, what it means, the fix, and whether it blocks training (the
report the doctor's steps fill in is `eosguard.checks.report`).

The checks (`eosguard.checks.doctor`), `eosguard train`'s gate, `--json` and the findings table of docs/doctor.md all
read this registry; a test pins the table to it.

Run as:
    eosguard doctor --tokenizer PATH --json   # findings by id; the table: docs/doctor.md
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class FindingSpec:
    """One kind of finding.

    id: stable name (printed by `--json`); severity: "error" makes `doctor` exit 1; what: one line for the README;
    fix: what to do; blocks_training: `eosguard train` refuses to start on it (unless --force). An error that
    eosguard's own pipeline already handles (it drops and counts such examples) does not block training.
    """

    id: str
    severity: Severity
    what: str
    fix: str
    blocks_training: bool = True


FINDINGS: dict[str, FindingSpec] = {
    f.id: f
    for f in (
        FindingSpec(
            "eos-masked",
            "error",
            "collating real examples leaves assistant-closing stop tokens (or a token of their closing sequence) at "
            "label -100 (count)",
            "make pad differ from the end-of-turn token (pad = unk, a reserved or a new <pad>), or pad labels by "
            "position (eosguard.PadCollator); wrap any collator with eosguard.checks.guard to catch this in training",
        ),
        FindingSpec(
            "template-no-eos",
            "error",
            "the chat template closes assistant turns (or all but the last) with no stop token",
            "use a template that closes every assistant turn with its end-of-turn token (template: chatml)",
        ),
        FindingSpec(
            "template-unsupported",
            "error",
            "the chat template cannot be split into messages (it rejects, drops, rewrites or transforms them; count)",
            "use template: chatml, or a template that writes each message once and keeps earlier turns as they were",
        ),
        FindingSpec(
            "generation-eos-mismatch",
            "error",
            "the model's generation config eos ids miss a stop token of the template (end of turn, tool call): "
            "`generate()` will not stop, nor vLLM or TRL's GRPO / RLOO (they add the tokenizer's eos) unless the "
            "tokenizer's eos is that token",
            "set generation_config.eos_token_id to every stop token of the template (eosguard train and eosguard fix "
            "write them)",
        ),
        FindingSpec(
            "new-token-untrained",
            "error",
            "`--lora` and a stop token is new: its rows would never be trained",
            "train those rows: peft LoraConfig(modules_to_save=['embed_tokens', 'lm_head']) or trainable_token_indices "
            "(eosguard train adds them automatically)",
        ),
        FindingSpec(
            "stop-token-untrained",
            "error",
            "a stop token's embedding or output rows are untrained (at zero, at the vocabulary's mean, random at the "
            "initialisation scale, or under a quarter of the median row's norm): read from the weights, an adapter's "
            "as PEFT loads them",
            "train those rows: a full fine-tune, or LoRA with modules_to_save=['embed_tokens', 'lm_head'] (one alone "
            "leaves the other layer's rows, on a tied model too unless ensure_weight_tying=True) or "
            "trainable_token_indices (an untied model: {'embed_tokens': ids, 'lm_head': ids}) (LLaMA-Factory: "
            "`additional_target: embed_tokens,lm_head`; axolotl: `lora_modules_to_save: [embed_tokens, lm_head]`; "
            "eosguard train adds them)",
        ),
        FindingSpec(
            "vocab-mismatch",
            "error",
            "the tokenizer has more tokens than the model has embedding rows",
            "model.resize_token_embeddings(len(tokenizer)) before training (eosguard train does)",
        ),
        FindingSpec(
            "no-trainable-tokens",
            "error",
            "examples with no trained token within `--max-length` (count)",
            "raise max_length or drop them (eosguard's over_length policy drops and counts them)",
            blocks_training=False,
        ),
        FindingSpec(
            "pad-is-eos",
            "warning",
            "pad id equals the eos / end-of-turn id",
            "tokenizer.pad_token = tokenizer.unk_token, or add a dedicated pad token; or pad labels by position",
        ),
        FindingSpec(
            "no-pad-token",
            "warning",
            "no pad token (trainers then fall back to pad = eos)",
            "set a pad token distinct from the end-of-turn token: an unused reserved token, unk, or a new <pad> "
            "(eosguard.prepare_tokenizer chooses and reports)",
        ),
        FindingSpec(
            "padding-left",
            "warning",
            "left padding for training",
            "pad on the right for training (eosguard's collator does) and on the left only for batched generation",
        ),
        FindingSpec(
            "truncation-drops-eos",
            "warning",
            "examples whose last end-of-turn token is cut at `--max-length` by a plain truncating pipeline (count)",
            "raise max_length, or use eosguard's over_length policy (drop | truncate keeping the stop token | error)",
        ),
        FindingSpec(
            "special-token-in-content",
            "warning",
            "conversations whose content holds special-token text (count)",
            "encode content as plain text (eosguard does) or clean the data",
        ),
        FindingSpec(
            "double-bos",
            "warning",
            "examples that start with two BOS tokens (proven on the pipeline's features, count)",
            "tokenize rendered chat text with add_special_tokens=False (apply_chat_template(tokenize=True) does), or "
            "render with eosguard",
        ),
        FindingSpec(
            "missing-chat-template",
            "warning",
            "no chat template: inference cannot format prompts as training did",
            "save the tokenizer with a chat template (eosguard.prepare_tokenizer installs ChatML)",
        ),
        FindingSpec(
            "stop-rewritten",
            "error",
            "replies whose closing token the template changes once later turns follow (gpt-oss: `<|return|>` becomes "
            "`<|end|>`): a whole-conversation pipeline trains a closing the model does not stop on (count)",
            "train each such reply as the last message of its own example (eosguard does, counted), or use a "
            "prefix-preserving template (TRL's `_training` twins)",
        ),
        FindingSpec(
            "reply-rewritten",
            "warning",
            "replies the template renders differently once later turns follow (reasoning dropped, tools moved), "
            "their closing token kept: a whole-conversation pipeline trains text the model never produces (count)",
            "train each such reply as the last message of its own example (eosguard does, counted), or use a "
            "prefix-preserving template (TRL's `_training` twins)",
        ),
        FindingSpec(
            "open-reasoning-block",
            "warning",
            "the generation prompt opens a reasoning block (`<think>`) that replies without reasoning do not fill "
            "(count)",
            "give the replies their reasoning (`reasoning_content`), or the template argument that closes the block "
            "(the finding names it when one exists); eosguard trains them after the block closed empty",
        ),
        FindingSpec(
            "gguf-eos-mismatch",
            "error",
            "a stop token of the chat template is not among the GGUF's eos / eot / eom ids, nor a name llama.cpp "
            "knows: llama.cpp, Ollama and LM Studio generate past it",
            "export with `eosguard export gguf` (sets eot / eom and proves it), or by hand: llama.cpp's "
            "`gguf_new_metadata.py --special-token-by-id eot ID`",
        ),
        FindingSpec(
            "gguf-stop-by-name",
            "warning",
            "a stop token of the chat template is not among the GGUF's eos / eot / eom ids: llama.cpp stops on it "
            "only because it knows its name (ChatML's, Llama-3's, Gemma's end of turn, ...); engines that read the "
            "ids alone do not",
            "export with `eosguard export gguf` (sets eot / eom)",
        ),
        FindingSpec(
            "gguf-stop-not-in-vocab",
            "error",
            "a stop token of the chat template is not in the GGUF's vocabulary",
            "convert from the folder the model was trained in (its tokenizer holds the token)",
        ),
        FindingSpec(
            "gguf-template-drift",
            "error",
            "the GGUF's embedded chat template differs from the one the model was trained with",
            "export with `eosguard export gguf` (embeds the trained template, arguments included)",
        ),
        FindingSpec(
            "gguf-no-template",
            "warning",
            "the GGUF embeds no chat template: engines fall back to one of their own",
            "export with `eosguard export gguf` (embeds the trained template)",
        ),
        FindingSpec(
            "gguf-add-eos",
            "warning",
            "the GGUF asks engines to append an eos to every prompt (`add_eos_token`)",
            "export with `eosguard export gguf` (turns it off)",
        ),
        FindingSpec(
            "template-mismatch",
            "error",
            "prepared rows with trained tokens and none of the tokenizer's chat-template headers: trained in one "
            "format, served in another (count of rows)",
            "prepare with the template the model is served with (LLaMA-Factory: the `template:` that matches the "
            "tokenizer, e.g. `template: qwen` for ChatML; axolotl: `chat_template: tokenizer_default`), or serve with "
            "the tokenizer the training tool wrote",
        ),
        FindingSpec(
            "closer-not-a-stop",
            "error",
            "prepared replies trained to end on a token the model does not stop on (count)",
            "train each reply through the template's stop token (axolotl: `eot_tokens`, `train_on_eos: turn`; "
            "LLaMA-Factory: the template whose stop word is the model's end of turn), or add that token to "
            "generation_config.json's eos ids",
        ),
        FindingSpec(
            "reply-header-missing",
            "error",
            "prepared rows that train tokens with no assistant header before them: the prompt was cut away (count of "
            "rows)",
            "raise the cutoff (LLaMA-Factory: `cutoff_len`; axolotl: `sequence_len`) or drop such rows "
            "(axolotl: `excess_length_strategy: drop`); eosguard's over_length policy never cuts a prompt",
        ),
        FindingSpec(
            "prompt-truncated",
            "warning",
            "preference completions trained after a prompt cut at its start (TRL's `truncation_mode='keep_end'` at "
            "`max_length`): the system message and earlier turns are gone, the reply learned for a prompt no one "
            "sends (count)",
            "TRL: `truncation_mode='keep_start'` (its default) with a `max_length` that holds each pair; "
            "`eosguard prepare` drops whole earlier turns of a prompt, never part of one",
        ),
        FindingSpec(
            "pad-trained",
            "error",
            "prepared rows that train padding positions (attention mask 0) (count of rows)",
            "set the labels of padding to -100 (pad labels by position: eosguard.PadCollator)",
        ),
        FindingSpec(
            "prompt-trained",
            "warning",
            "prepared rows that train prompt tokens beside their replies (count of rows): intended with "
            "`train_on_prompt` / `train_on_inputs`, a mistake otherwise",
            "train replies only (LLaMA-Factory: `train_on_prompt: false`; axolotl: `train_on_inputs: false`, "
            "`roles_to_train: [assistant]`)",
        ),
        FindingSpec(
            "config-masks-stop",
            "error",
            "a training config (axolotl) that leaves replies' stop tokens untrained: `roles_to_train` without the "
            "assistant, `train_on_eos: none | last`, `eot_tokens` without the template's end of turn",
            "axolotl: `roles_to_train: [assistant]`, `train_on_eos: turn`, `eot_tokens` listing every stop token of "
            "the template (the finding names them)",
        ),
        FindingSpec(
            "config-stop-unnamed",
            "error",
            "an axolotl config with no `eot_tokens` for a template whose turns end with a token other than the eos: "
            "axolotl takes `eot_tokens` = [eos] and trains a reply's end of turn only as one of those, so the real "
            "one stays at -100 (axolotl 0.19.0; axolotl#3754)",
            "set `eot_tokens` to the template's stop tokens (the finding names them)",
        ),
        FindingSpec(
            "template-files-differ",
            "error",
            "the folder's `chat_template.jinja` and `tokenizer_config.json` hold different templates: transformers "
            "and vLLM read the first, older converters and servers the second",
            "keep one template: save the tokenizer again with transformers >= 4.43 (it writes chat_template.jinja) "
            "and delete the `chat_template` key of tokenizer_config.json",
        ),
        FindingSpec(
            "modelfile-no-template",
            "warning",
            "an Ollama Modelfile whose FROM has no TEMPLATE: unless Ollama recognises the GGUF's embedded template as "
            "one of its own, it renders `{{ .Prompt }}` (before 0.30, ollama#8982) or the GGUF's template (0.30+)",
            "write a TEMPLATE in the trained format, or check with `ollama show --template` that Ollama took the "
            "GGUF's",
        ),
        FindingSpec(
            "modelfile-template-drift",
            "error",
            "an Ollama Modelfile TEMPLATE that, rendered as Ollama renders it (its SYSTEM applied) on probe "
            "conversations, does not write what the trained template writes (or fails): another format than the "
            "model learned",
            "write the TEMPLATE (and SYSTEM) that renders the trained format: the report shows where they part; "
            "`eosguard export gguf --ollama` writes one where a Go template can",
        ),
        FindingSpec(
            "modelfile-no-stop",
            "warning",
            "a stop token of the template with no `PARAMETER stop` line in the Ollama Modelfile",
            "add `PARAMETER stop <token>` for each stop token (`eosguard export gguf --ollama` writes them)",
        ),
        FindingSpec(
            "completion-unclosed",
            "error",
            "preference completions (DPO, KTO, ORPO rows) that end without the template's closing sequence or the "
            "eos: the template wrote no end of turn after the last reply, or the text ends on something else (count)",
            "conversational records with a template that closes a last reply (TRL renders it), or end each plain-text "
            "completion with the closing sequence; `eosguard prepare` closes each completion once",
        ),
        FindingSpec(
            "closer-replaced",
            "error",
            "preference completions that end with the tokenizer's eos where the template closes replies with its end "
            "of turn (TRL appends `eos_token` to plain text; a base tokenizer's `<|endoftext|>` is not `<|im_end|>`) "
            "(count)",
            "a tokenizer whose eos is the template's end of turn (`tokenizer.eos_token = '<|im_end|>'`; axolotl: "
            "`special_tokens: {eos_token: ...}`), or conversational records (TRL appends nothing to them); "
            "`eosguard prepare` puts the closing sequence in its place",
        ),
        FindingSpec(
            "closer-doubled",
            "warning",
            "preference completions closed twice: the closing sequence and then another one or the tokenizer's eos "
            "(TRL appends `eos_token` to templated text that ends with `<|im_end|>\\n`): trained past the stop (count)",
            "conversational records (TRL appends nothing to them), or plain-text completions without their closer "
            "and a tokenizer whose eos is the end of turn (TRL appends it once); `eosguard prepare` keeps one",
        ),
        FindingSpec(
            "chosen-loses-stop",
            "error",
            "preference pairs whose chosen completion is trained without a stop token (absent, or cut at "
            "`max_length`) where the rejected one keeps it, more often than the reverse (KTO: desirable more often "
            "than undesirable): the loss teaches the model not to stop (count of pairs)",
            "a `max_length` that holds every pair whole (TRL's DPOConfig / KTOConfig; LLaMA-Factory's `cutoff_len`; "
            "axolotl's `sequence_len` with `excess_length_strategy: drop`), or drop the pairs that do not fit; "
            "`eosguard prepare` drops whole earlier turns of prompts, never a completion",
        ),
        FindingSpec(
            "prompt-not-prefix",
            "warning",
            "the template's generation prompt is not a token prefix of the training sequence (count)",
            "make add_generation_prompt write exactly the header the template writes before each reply (eosguard's "
            "renderer guarantees it)",
        ),
    )
}


def markdown_table() -> str:
    """The README's findings table, generated from the registry."""
    rows = ["| id | severity | what |", "|---|---|---|"]
    rows += [f"| `{f.id}` | {f.severity} | {f.what} |" for f in FINDINGS.values()]
    return "\n".join(rows)
