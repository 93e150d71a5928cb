"""Every doctor finding, declared once: id, severity, what it means, the fix, and whether it blocks training.

The checks (`eosguard.doctor`), `eosguard train`'s gate, `--json` and the README's findings table all read this
registry; a test pins the README table to it.

Run as:
    python -m eosguard.findings   # prints the registry as the README's markdown table
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
            "position (eosguard.PadCollator); wrap any collator with eosguard.guard to catch this in training",
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
            "`generate()` and vLLM will not stop",
            "set generation_config.eos_token_id to every stop token of the template (eosguard train writes them)",
        ),
        FindingSpec(
            "new-token-untrained",
            "error",
            "`--lora` and a stop token is new: its rows would never be trained",
            "train those rows: peft LoraConfig(modules_to_save=['embed_tokens', 'lm_head']) or trainable_token_indices "
            "(eosguard train adds them automatically)",
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
            "reply-rewritten",
            "error",
            "replies the template renders differently once later turns follow (reasoning dropped, another closing "
            "token): a whole-conversation pipeline trains text the model never produces (count)",
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


if __name__ == "__main__":
    print(markdown_table())
