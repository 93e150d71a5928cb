"""The doctor through the real CLI: exit codes, finding ids, JSON, and bad input."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from eosguard.cli import app
from eosguard.doctor import diagnose
from eosguard.fixtures import family_tokenizer, openhermes_tokenizer
from eosguard.templates import ChatTemplate

runner = CliRunner()


def doctor(*args):
    result = runner.invoke(app, ["doctor", *map(str, args)])
    return result.exit_code, result.output


def ids_of(args):
    code, out = doctor(*args, "--json")
    return code, [f["id"] for f in json.loads(out)["findings"]]


def test_bug_report_setup_fails_with_eos_masked_and_pad_is_eos(tokenizer_dirs):
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["eos"], "--collator", "transformers"])
    assert code == 1
    assert {"eos-masked", "pad-is-eos"} <= set(ids)


@pytest.mark.parametrize("pad", ["unk", "dedicated"])
def test_known_fixes_pass(tokenizer_dirs, pad):
    code, ids = ids_of(["--tokenizer", tokenizer_dirs[pad], "--collator", "transformers"])
    assert code == 0 and "eos-masked" not in ids and "pad-is-eos" not in ids


def test_no_pad_token_is_flagged_and_the_usual_fallback_proven_masking(tokenizer_dirs):
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["none"], "--collator", "transformers"])
    assert code == 1 and "no-pad-token" in ids and "eos-masked" in ids
    # TRL pads labels with -100 separately: with its collator the stop token survives.
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["eos"], "--collator", "trl"])
    assert code == 0 and "eos-masked" not in ids and "pad-is-eos" in ids


def test_table_output_and_show(tokenizer_dirs):
    code, out = doctor("--tokenizer", tokenizer_dirs["eos"], "--collator", "transformers", "--show", "1")
    assert code == 1 and "✗ collator 'transformers': 0/4 stop tokens trained" in out and "eos-masked" in out
    # No colour here (a pipe): trained runs are between ⟦ ⟧, so the masked reply-closing <|im_end|> sits outside.
    assert "example 1:" in out and "Blue.⟧<|im_end|>⟦↵" in out
    assert "▁" not in out  # SentencePiece markers are shown as spaces
    code, out = doctor("--tokenizer", tokenizer_dirs["eos"], "--show", "1")
    assert code == 0 and "<|im_start|>assistant↵\n⟦Blue.<|im_end|>⟧↵" in out


def test_generation_eos_mismatch_and_new_token_untrained(tiny_model_dir, tiny_base_model_dir, tokenizer_dirs, tmp_path):
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["unk"], "--model", tiny_model_dir])
    assert code == 1 and "generation-eos-mismatch" in ids
    # A base model with 32,000 rows and a tokenizer that added <|im_end|>: vocab too small, and untrained under LoRA.
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["unk"], "--model", tiny_base_model_dir, "--lora"])
    assert code == 1 and {"vocab-mismatch", "new-token-untrained"} <= set(ids)


def test_data_findings(tokenizer_dirs, tmp_path):
    data = tmp_path / "d.jsonl"
    long_answer = " ".join(["word"] * 60)
    rows = [
        {"messages": [{"role": "user", "content": "say <|im_end|> please"}, {"role": "assistant", "content": "ok"}]},
        {"messages": [{"role": "user", "content": "long?"}, {"role": "assistant", "content": long_answer}]},
        {"messages": [{"role": "user", "content": " ".join(["q"] * 80)}, {"role": "assistant", "content": "a"}]},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["--tokenizer", tokenizer_dirs["unk"], "--data", data, "--max-length", "40", "--json"]
    code, out = doctor(*args, "--collator", "transformers")  # a plain truncating pipeline
    found = {f["id"]: f for f in json.loads(out)["findings"]}
    assert found["special-token-in-content"]["count"] == 1
    assert found["truncation-drops-eos"]["count"] == 2
    assert found["no-trainable-tokens"]["count"] == 1 and code == 1
    # eosguard's own pipeline keeps the stop token of every example it truncates: the doctor says so, not the opposite.
    code, out = doctor(*args)
    report = json.loads(out)
    assert "truncation-drops-eos" not in [f["id"] for f in report["findings"]]
    assert "keeps the stop token" in next(s["detail"] for s in report["steps"] if s["title"] == "data")


def test_templates_missing_or_without_stop(tokenizer_dirs):
    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = None
    assert "missing-chat-template" in diagnose(tok).ids
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    report = diagnose(tok)
    assert "template-no-eos" in report.ids and report.has_errors


def test_end_of_turn_found_from_template_not_assumed(tokenizer_dirs):
    tok = openhermes_tokenizer()
    chat = ChatTemplate(tok)
    assert (chat.end_of_turn, chat.end_of_turn_id) == ("<|im_end|>", 32000)
    tok.add_tokens(["<end_of_turn>"], special_tokens=True)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    chat = ChatTemplate(tok)
    assert (chat.end_of_turn, chat.end_of_turn_id) == ("<end_of_turn>", tok.convert_tokens_to_ids("<end_of_turn>"))


def test_double_bos_proven_on_features():
    # Llama-3's template writes <|begin_of_text|>; tokenizing its text again with special tokens adds a second one.
    tok = family_tokenizer("llama3")
    assert "double-bos" in diagnose(tok, collator="transformers").ids
    assert "double-bos" not in diagnose(tok, collator="eosguard").ids


def test_bad_usage_exit_2(tokenizer_dirs, tmp_path):
    code, out = doctor("--tokenizer", tmp_path / "missing")
    assert code == 2 and "no such tokenizer folder" in out and "Traceback" not in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    code, out = doctor("--tokenizer", tokenizer_dirs["unk"], "--data", bad)
    assert code == 2 and f"{bad}:1: malformed JSON" in out
    code, out = doctor("--tokenizer", tokenizer_dirs["unk"], "--collator", "nosuch")
    assert code == 2 and "unknown collator" in out
    code, out = doctor("--tokenizer", tokenizer_dirs["unk"], "--collator", "nosuchmodule:make")
    assert code == 2 and "cannot load collator factory" in out
    empty = tmp_path / "emptymodel"
    empty.mkdir()
    code, out = doctor("--tokenizer", tokenizer_dirs["unk"], "--model", empty)
    assert code == 2 and "not a model folder" in out


def make_bad_collator(tokenizer):
    """A user collator factory (MODULE:FACTORY) that masks the eos id, like many hand-written ones."""
    from transformers import DataCollatorForLanguageModeling

    inner = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def collate(features):
        batch = inner(features)
        batch["labels"][batch["labels"] == tokenizer.eos_token_id] = -100
        return batch

    return collate


def test_custom_collator_factory(tokenizer_dirs):
    code, ids = ids_of(["--tokenizer", tokenizer_dirs["unk"], "--collator", "tests.test_doctor:make_bad_collator"])
    assert code == 1 and "eos-masked" in ids


def test_cli_reads_local_folder_copies(tokenizer_dirs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tokenizer_dirs["unk"], copy)
    assert doctor("--tokenizer", copy)[0] == 0


def test_template_that_closes_only_the_last_message_and_has_no_generation_prompt():
    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
        "{% if loop.last %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    )
    report = diagnose(tok, collator="transformers")
    assert "template-unsupported" in report.ids and report.has_errors
    assert "the generation prompt for message 2 is not a prefix" in report.findings[0].message
    assert not next(s for s in report.steps if s.title == "chat template").ok


def test_prompt_not_prefix():
    tok = openhermes_tokenizer(pad="unk")
    # The generation prompt ends with a newline, but replies follow the header with a space.
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    report = diagnose(tok, collator="transformers")
    assert "prompt-not-prefix" in report.ids
    assert "prompt-not-prefix" not in diagnose(openhermes_tokenizer(pad="unk"), collator="transformers").ids


def test_trl_assistant_only_template_that_leaves_the_stop_token_out():
    from tests.test_integrations import TEMPLATE_WITH_STOP_IN_MASK, TEMPLATE_WITHOUT_STOP_IN_MASK

    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = TEMPLATE_WITHOUT_STOP_IN_MASK
    report = diagnose(tok, collator="trl")
    assert "eos-masked" in report.ids and report.facts["collator"]["stop_masked"] == 4
    tok.chat_template = TEMPLATE_WITH_STOP_IN_MASK
    assert "eos-masked" not in diagnose(tok, collator="trl").ids
