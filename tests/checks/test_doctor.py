"""The doctor through the real CLI: exit codes, finding ids, JSON, and bad input."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.chat.templates import ChatTemplate
from eosguard.checks.doctor import diagnose
from eosguard.cli.app import app
from eosguard.testing.fixtures import family_tokenizer, openhermes_tokenizer

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
    code, ids = ids_of(
        ["--tokenizer", tokenizer_dirs["unk"], "--collator", "tests.checks.test_doctor:make_bad_collator"]
    )
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
    from tests.integrations.test_integrations import TEMPLATE_WITH_STOP_IN_MASK, TEMPLATE_WITHOUT_STOP_IN_MASK

    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = TEMPLATE_WITHOUT_STOP_IN_MASK
    report = diagnose(tok, collator="trl")
    assert "eos-masked" in report.ids and report.facts["collator"]["stop_masked"] == 4
    tok.chat_template = TEMPLATE_WITH_STOP_IN_MASK
    assert "eos-masked" not in diagnose(tok, collator="trl").ids


# -- #28: the next turn's token closes a reply only where the model stops on it; a skipped step never passes --------

CHATML_REPLIES_UNCLOSED = (  # system and user turns keep <|im_end|>; assistant turns end with a newline
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_EOS_AT_THE_END = (  # no token after any turn, eos once after the whole conversation
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% else %}{{ eos_token }}{% endif %}"
)


def model_folder(path, tok, eos_ids):
    """A model folder with config.json and generation_config.json, no weights (the weights check is skipped)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"vocab_size": len(tok), "eos_token_id": eos_ids[0]}))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos_ids}))
    return path


@pytest.mark.parametrize("template", [CHATML_REPLIES_UNCLOSED, CHATML_EOS_AT_THE_END], ids=["newline", "eos-at-end"])
def test_chatml_templates_that_leave_replies_unclosed_exit_1(template, tmp_path):
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    tok.chat_template = template
    if template is CHATML_EOS_AT_THE_END:
        tok.add_special_tokens({"eos_token": "</s>"})
    tok.save_pretrained(tmp_path / "tok")
    code, ids = ids_of(["--tokenizer", tmp_path / "tok"])
    assert code == 1 and "template-no-eos" in ids
    # A model whose generation config stops on <|im_end|> alone: the replies' closing is still missing.
    model = model_folder(tmp_path / "model", tok, [tok.convert_tokens_to_ids("<|im_end|>")])
    code, out = doctor("--tokenizer", tmp_path / "tok", "--model", model)
    assert code == 1 and "template-no-eos" in out and "trained and used" not in out


def test_online_rl_stop_set_of_a_base_model_given_a_chat_template(tmp_path):
    """Qwen2.5 base's setup on SmolLM2's ChatML tokenizer: eos <|endoftext|> in the tokenizer and the generation config,
    replies closed by <|im_end|>. TRL's GRPO / RLOO finish on the two sets joined: <|endoftext|> alone, so the doctor
    says online RL misses the closer too; with the generation config fixed it passes; a tokenizer whose eos is
    <|im_end|> closes the gap for GRPO, not for generate()."""
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    end, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    tok.save_pretrained(tmp_path / "instruct")  # eos <|im_end|>, as shipped
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(tmp_path / "base")

    def run(tokenizer, eos_ids):
        model = model_folder(tmp_path / f"{tokenizer}-{len(eos_ids)}", tok, eos_ids)
        code, out = doctor("--tokenizer", tmp_path / tokenizer, "--model", model, "--json")
        report = json.loads(out)
        return code, report["facts"]["rl_stop_ids"], {f["id"]: f for f in report["findings"]}

    code, rl_ids, found = run("base", [end])
    assert code == 1 and rl_ids == [end]
    alone = model_folder(tmp_path / "alone", tok, [end])
    tok.save_pretrained(alone)  # a saved run's folder holds its tokenizer: --model alone reads it
    code, out = doctor("--model", alone, "--json")
    assert code == 1 and json.loads(out)["facts"]["rl_stop_ids"] == [end]
    message = found["generation-eos-mismatch"]["message"]
    assert f"vLLM and TRL's GRPOTrainer / RLOOTrainer stop on [{end}]" in message
    assert f"miss <|im_end|> (id {im_end}; final answers) too" in message
    fix = found["generation-eos-mismatch"]["fix"]
    assert fix.startswith(f'generation_config.json: "eos_token_id": [{end}, {im_end}]')
    code, rl_ids, found = run("base", [end, im_end])
    assert code == 0 and rl_ids == [end, im_end] and "generation-eos-mismatch" not in found
    code, rl_ids, found = run("instruct", [end])
    assert code == 1 and rl_ids == [im_end, end]
    assert "so they stop where they should" in found["generation-eos-mismatch"]["message"]


def test_glm_next_turn_token_closes_a_reply_where_the_model_stops_on_it(tmp_path):
    from eosguard.testing.fixtures import trl_tokenizer

    tok = trl_tokenizer("glm4moe")
    tok.pad_token = "<|endoftext|>"  # distinct from every stop token, as GLM ships it
    tok.save_pretrained(tmp_path / "tok")
    # Without a model folder the stop on <|user|> is assumed (GLM closes no turn with a token of its own), and said.
    code, out = doctor("--tokenizer", tmp_path / "tok")
    out = " ".join(out.split())  # rich wraps long lines in a pipe
    assert code == 0 and "assumed: the model stops on <|user|> and <|observation|>" in out and "--model" in out
    stops = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
    code, out = doctor("--tokenizer", tmp_path / "tok", "--model", model_folder(tmp_path / "glm", tok, stops))
    assert code == 0 and "assumed" not in out  # GLM-4.5's generation config lists <|user|> and <|observation|>
    code, ids = ids_of(["--tokenizer", tmp_path / "tok", "--model", model_folder(tmp_path / "eos", tok, stops[:1])])
    assert code == 1 and "template-no-eos" in ids  # a generation config that stops on <|endoftext|> alone


def make_empty_collator(tokenizer):
    """A collator factory whose rows hold no assistant reply (it drops what it is given): nothing to check."""
    import torch

    def collate(features):
        pad = tokenizer.pad_token_id
        return {"input_ids": torch.full((len(features), 4), pad), "labels": torch.full((len(features), 4), -100)}

    return collate


SKIP_PATHS = {  # each way a doctor step is reported as skipped: (arguments, exit code or None for "an error", step)
    "no template": lambda d: (["--tokenizer", d["mistral-base"]], 0, "chat template"),
    "template unusable": lambda d: (["--tokenizer", d["no-eos"]], None, "collator"),
    "collator cannot render": lambda d: (["--tokenizer", d["unk"], "--data", d["tool-calls"]], None, "collator"),
    "no reply in the rows": lambda d: (
        ["--tokenizer", d["unk"], "--collator", "tests.checks.test_doctor:make_empty_collator"],
        0,
        "collator",
    ),
    "prepared rows, template unusable": lambda d: (["--tokenizer", d["no-eos"], "--prepared", d["rows"]], None, "rows"),
    "prepared rows, none there": lambda d: (["--tokenizer", d["unk"], "--prepared", d["no-rows"]], 0, "rows of"),
    "stop-token rows, no weights": lambda d: (
        ["--tokenizer", d["unk"], "--model", d["config-only"]],
        0,
        "stop-token rows",
    ),
    "GGUF, template unusable": lambda d: (["--gguf", d["gguf"], "--tokenizer", d["no-eos"]], None, "stop metadata"),
    "Modelfile, no template to hold it to": lambda d: (["--modelfile", d["modelfile"]], 0, "chat template"),
    "Modelfile, a TEMPLATE the renderer does not follow": lambda d: (
        ["--modelfile", d["modelfile-named"], "--tokenizer", d["unk"]],
        0,
        "TEMPLATE rendered",
    ),
    "config, no local tokenizer": lambda d: (["--config", d["lf-config"]], 0, "stop tokens for the config"),
    "config, its named template unknown here": lambda d: (
        ["--config", d["axolotl-llama3"], "--tokenizer", d["mistral-base"]],
        0,
        "chat template",
    ),
    "config, no local prepared rows": lambda d: (
        ["--config", d["axolotl-config"], "--tokenizer", d["gemma"]],
        0,
        "prepared rows",
    ),
}
SKIP_SITES = (
    "checks/doctor.py",
    "checks/rows.py",
    "checks/configs.py",
    "checks/weights.py",
    "serve/gguf_doctor.py",
    "serve/modelfile.py",
    "recipes/doctor.py",
)


@pytest.fixture(scope="module")
def skip_inputs(tokenizer_dirs, tiny_model_dir, tmp_path_factory):
    from eosguard.testing.fixtures import smollm2_gguf_path

    root = tmp_path_factory.mktemp("skips")
    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = CHATML_REPLIES_UNCLOSED
    tok.save_pretrained(root / "no-eos")
    calls = [{"id": "call00001", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": calls}]}
    (root / "tools.jsonl").write_text(json.dumps(row) + "\n")
    (root / "rows.jsonl").write_text(json.dumps({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}) + "\n")
    (root / "no-rows.jsonl").write_text("")
    (root / "config-only").mkdir()  # a model's config files and no weights: its stop rows cannot be read
    shutil.copy(tiny_model_dir / "config.json", root / "config-only" / "config.json")
    (root / "config-only" / "generation_config.json").write_text(json.dumps({"eos_token_id": [32000]}))  # <|im_end|>
    (root / "Modelfile").write_text('FROM llama3.2\nPARAMETER stop "<|eot_id|>"\n')
    (root / "llama3.yaml").write_text("base_model: meta-llama/Llama-3.1-8B\nchat_template: llama3\n")
    named = 'TEMPLATE """{{ define "t" }}{{ .Content }}{{ end }}{{ range .Messages }}{{ template "t" . }}{{ end }}"""'
    (root / "Named").write_text(f'FROM llama3.2\n{named}\nPARAMETER stop "<|im_end|>"\n')
    from eosguard.testing.fixtures import family_tokenizer

    family_tokenizer("gemma").save_pretrained(root / "gemma")
    examples = Path(__file__).parents[2] / "examples"
    return {
        "lf-config": examples / "llamafactory" / "smollm2-qwen.yaml",
        "axolotl-config": examples / "axolotl" / "gemma-fixed.yaml",
        "axolotl-llama3": root / "llama3.yaml",
        "gemma": root / "gemma",
        **tokenizer_dirs,
        "no-eos": root / "no-eos",
        "tool-calls": root / "tools.jsonl",
        "rows": root / "rows.jsonl",
        "no-rows": root / "no-rows.jsonl",
        "config-only": root / "config-only",
        "gguf": smollm2_gguf_path(),
        "modelfile": root / "Modelfile",
        "modelfile-named": root / "Named",
    }


@pytest.mark.parametrize("path", sorted(SKIP_PATHS))
def test_no_output_says_the_stop_token_is_trained_when_a_step_was_skipped(path, skip_inputs, tmp_path):
    args, expected_code, step = SKIP_PATHS[path](skip_inputs)
    page = tmp_path / "labels.html"
    code, out = doctor(*args, "--html", page)
    _, js = doctor(*args, "--json")
    report = json.loads(js)
    assert report["skipped"] >= 1
    for text in (out, js, page.read_text()):
        assert "trained and used" not in text and "engines reading this file stop" not in text
    if expected_code is not None:
        assert code == expected_code and "not checked:" in out and step in report["verdict"]
    else:
        assert code == 1 and report["findings"]


def test_every_skip_path_of_the_doctor_is_in_the_test_above():
    import re

    package = Path(__file__).parents[2] / "src" / "eosguard"
    sites = sum(
        len(re.findall(r"report\.step\([^)]*\bNone\b", (package / f).read_text(), flags=re.S)) for f in SKIP_SITES
    )
    assert sites == len(SKIP_PATHS), "a new skip path: add it to SKIP_PATHS"


GEMMA_FIRST = (  # Gemma's first template (gemma-7b-it): no system turn, strict alternation, content trimmed
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
MISTRAL_STRICT = (  # Mistral-7B-Instruct-v0.1's: user / assistant only, strict alternation
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


@pytest.mark.parametrize("family, template", [("gemma", GEMMA_FIRST), ("mistral-v3", MISTRAL_STRICT)])
def test_a_template_without_a_system_turn_is_probed_without_one(family, template, tmp_path):
    """`--prepared` with a template that rejects system turns exited 1 (`template-unsupported`): the doctor's probes
    held a system turn. Its rows, right, pass; the same rows with the stop token masked do not."""
    from eosguard.chat.render import ChatRenderer
    from eosguard.data.conversations import conversation

    tok = family_tokenizer(family)
    tok.chat_template = template
    tok.save_pretrained(tmp_path / "tok")
    chats = [conversation(("user", f"Say {w}."), ("assistant", w), ("user", "Again."), ("assistant", w)) for w in "ab"]
    rows = [r.to_example() for r in ChatRenderer(tok).examples(chats)]
    stop = ChatTemplate(tok).end_of_turn_id
    for name, masked in (("right", False), ("masked", True)):
        with (tmp_path / f"{name}.jsonl").open("w") as f:
            for r in rows:
                labels = [
                    -100 if masked and i == stop else int(x) for i, x in zip(r["input_ids"], r["labels"], strict=True)
                ]
                f.write(json.dumps({"input_ids": [int(i) for i in r["input_ids"]], "labels": labels}) + "\n")
    code, ids = ids_of(["--tokenizer", tmp_path / "tok", "--prepared", tmp_path / "right.jsonl"])
    assert code == 0 and "template-unsupported" not in ids, ids
    code, ids = ids_of(["--tokenizer", tmp_path / "tok", "--prepared", tmp_path / "masked.jsonl"])
    assert code == 1 and "eos-masked" in ids


def test_an_indented_template_is_refused_for_its_whitespace_with_the_fix(tmp_path):
    indented = (
        "{% for message in messages %}\n"
        "    {{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\n"
        "{% endfor %}\n{% if add_generation_prompt %}\n    {{ '<|im_start|>assistant\\n' }}\n{% endif %}\n"
    )
    for name, template in (("indented", indented), ("trimmed", indented.replace("{%", "{%-").replace("%}", "-%}"))):
        tok = openhermes_tokenizer(pad="unk")
        tok.chat_template = template.replace("{{", "{{-").replace("}}", "-}}") if name == "trimmed" else template
        tok.save_pretrained(tmp_path / name)
    code, out = doctor("--tokenizer", tmp_path / "indented", "--json")
    (found,) = [f for f in json.loads(out)["findings"] if f["id"] == "template-unsupported"]
    assert code == 1 and "whitespace alone" in found["message"] and "{%- ... -%}" in found["fix"]
    code, ids = ids_of(["--tokenizer", tmp_path / "trimmed"])
    assert code == 0 and "template-unsupported" not in ids
