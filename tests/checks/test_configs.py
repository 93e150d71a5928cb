"""`doctor --config` reads axolotl and LLaMA-Factory configs as those frameworks behave (axolotl 0.19.0, LLaMA-Factory
0.9.5, read in their source): the tokenizer as each sets it up (tokens added, eos replaced, a named template
resolved), new-token findings only for rows that really stay untrained, options that do not combine refused. Each
case beside its correct twin, which passes with exit 0."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.testing.fixtures import family_tokenizer, smollm2_model_dir

EXAMPLES = Path(__file__).parents[2] / "examples"
LF = Path(__file__).parents[1] / "inputs" / "llamafactory"


def doctor(*args) -> tuple[int, dict[str, dict], dict]:
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    return result.exit_code, {f["id"]: f for f in report["findings"]}, report


def step(report: dict, title: str) -> dict:
    return next(s for s in report["steps"] if s["title"].startswith(title))


def config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def toks(tmp_path_factory, tokenizer_dirs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("config-tokenizers")
    tok = family_tokenizer("llama3", base=True)
    tok.save_pretrained(root / "llama3-base")
    tok.chat_template = None  # a base model's tokenizer with no template of its own
    tok.save_pretrained(root / "llama3-bare")
    return {"mistral-base": tokenizer_dirs["mistral-base"], **{n: root / n for n in ("llama3-base", "llama3-bare")}}


AXOLOTL_CHATML = textwrap.dedent("""\
    base_model: mistralai/Mistral-7B-v0.3
    chat_template: chatml
    special_tokens:
      eos_token: "<|im_end|>"
    tokens: ["<|im_start|>"]
    eot_tokens: [{eot}]
    datasets:
      - path: chats.jsonl
        type: chat_template
    sequence_len: 2048
""")


def test_axolotl_named_chatml_is_read_on_a_base_tokenizer(tmp_path, toks):
    """`chat_template: chatml` on a base model (no template of its own) was ignored: every check skipped, exit 0."""
    broken = config(tmp_path, "broken.yaml", AXOLOTL_CHATML.format(eot='"</s>"'))
    code, found, report = doctor("--config", broken, "--tokenizer", toks["mistral-base"])
    assert code == 1 and "<|im_end|>" in found["config-masks-stop"]["message"]
    assert found["config-masks-stop"]["fix"].startswith("axolotl: `eot_tokens:")
    assert "axolotl's ChatML" in step(report, "tokenizer as axolotl")["detail"]
    fixed = config(tmp_path, "fixed.yaml", AXOLOTL_CHATML.format(eot='"<|im_end|>"'))
    code, found, report = doctor("--config", fixed, "--tokenizer", toks["mistral-base"])
    assert code == 0 and not found, found
    assert step(report, "chat template")["ok"] and "<|im_end|>" in step(report, "chat template")["detail"]
    # Only what concerns the run: no pad step, no eosguard collator step.
    assert not any(s["title"].startswith(("pad token", "collator")) for s in report["steps"])


AXOLOTL_LLAMA3 = textwrap.dedent("""\
    base_model: meta-llama/Llama-3.1-8B
    chat_template: llama3
    datasets:
      - path: chats.jsonl
        type: chat_template
    sequence_len: 2048
""")


def test_axolotl_named_template_of_the_tokenizers_family_or_its_installed_file(tmp_path, toks, monkeypatch):
    path = config(tmp_path, "llama3.yaml", AXOLOTL_LLAMA3)
    # Not installed here: the tokenizer's own template stands for the name, said as an assumption; its eos is
    # <|end_of_text|> (a base model) and axolotl's default eot_tokens = [eos] leaves <|eot_id|> untrained.
    code, found, report = doctor("--config", path, "--tokenizer", toks["llama3-base"])
    assert code == 1 and "<|eot_id|>" in found["config-stop-unnamed"]["message"]
    assert "taken as the tokenizer's own template" in step(report, "tokenizer as axolotl")["detail"]
    twin = config(tmp_path, "llama3-eot.yaml", AXOLOTL_LLAMA3 + 'eot_tokens: ["<|eot_id|>"]\n')
    code, found, _ = doctor("--config", twin, "--tokenizer", toks["llama3-base"])
    assert code == 0 and not found
    # A tokenizer with no template, axolotl not installed: not resolved, said why; skipped, never passed.
    code, found, report = doctor("--config", path, "--tokenizer", toks["llama3-bare"])
    skipped = step(report, "chat template")
    assert code == 0 and skipped["skipped"] and "axolotl is not installed" in skipped["detail"]
    assert "give --tokenizer" in skipped["detail"] and "not checked" in report["verdict"]
    # axolotl installed: its own template file is read (a package laid out as axolotl's, with a template we wrote).
    files = tmp_path / "site" / "axolotl" / "utils" / "chat_templates" / "templates"
    files.mkdir(parents=True)
    (tmp_path / "site" / "axolotl" / "__init__.py").write_text("")
    (files / "llama3.jinja").write_text(family_tokenizer("llama3").chat_template)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    code, found, report = doctor("--config", twin, "--tokenizer", toks["llama3-bare"])
    assert code == 0 and not found and str(files / "llama3.jinja") in step(report, "tokenizer as axolotl")["detail"]
    assert step(report, "chat template")["ok"] and "<|eot_id|>" in step(report, "chat template")["detail"]


def test_axolotl_new_tokens_only_where_they_are_new_and_lora_leaves_them(tmp_path, toks):
    base = textwrap.dedent("""\
        base_model: HuggingFaceTB/SmolLM2-135M-Instruct
        chat_template: tokenizer_default
        datasets:
          - path: chats.jsonl
            type: chat_template
        adapter: qlora
    """)
    smol = smollm2_model_dir()
    # Tokens SmolLM2 already has: no new row, nothing untrained (was new-token-untrained).
    known = config(tmp_path, "known.yaml", base + 'special_tokens:\n  eos_token: "<|im_end|>"\n')
    code, found, _ = doctor("--config", known, "--tokenizer", smol)
    assert code == 0 and not found
    # `tokens:` with an adapter and no embeddings saved: axolotl refuses the config itself (loaders/utils.py).
    listed = config(tmp_path, "listed.yaml", base + 'tokens: ["<|im_start|>", "<|im_end|>"]\n')
    code, found, report = doctor("--config", listed, "--tokenizer", smol)
    assert code == 0 and "new-token-untrained" not in found
    assert "axolotl refuses this config" in step(report, "axolotl config")["detail"]
    # New special tokens the template writes, on a base vocabulary, LoRA saving no embeddings: untrained rows.
    chatml = base.replace("tokenizer_default", "chatml")
    new = config(
        tmp_path, "new.yaml", chatml + "special_tokens:\n  additional_special_tokens: [<|im_start|>, <|im_end|>]\n"
    )
    code, found, _ = doctor("--config", new, "--tokenizer", toks["mistral-base"])
    assert code == 1 and "<|im_end|>" in found["new-token-untrained"]["message"]
    assert found["new-token-untrained"]["fix"] == "axolotl: `lora_modules_to_save: ['embed_tokens', 'lm_head']`"
    saved = config(tmp_path, "saved.yaml", new.read_text() + "lora_modules_to_save: [embed_tokens, lm_head]\n")
    code, found, _ = doctor("--config", saved, "--tokenizer", toks["mistral-base"])
    assert "new-token-untrained" not in found


def test_llamafactory_new_tokens_follow_its_resize_rule(tmp_path, toks):
    """LLaMA-Factory trains embed_tokens and lm_head itself when it resizes and `additional_target` is unset."""
    smol = smollm2_model_dir()
    code, found, report = doctor(
        "--config", EXAMPLES / "llamafactory" / "smollm2-lora-new-tokens.yaml", "--tokenizer", smol
    )
    assert code == 0 and "new-token-untrained" not in found and "prompt-trained" in found
    assert "trains embed_tokens and lm_head itself" in step(report, "llamafactory config")["detail"]
    known = config(tmp_path, "known.yaml", "model_name_or_path: x\ntemplate: qwen\nadd_special_tokens: <|im_end|>\n")
    code, found, report = doctor("--config", known, "--tokenizer", smol)
    assert code == 0 and not found and "new tokens" not in step(report, "tokenizer as llamafactory")["detail"]
    broken = EXAMPLES / "llamafactory" / "mistral-chatml-lora-embed-only.yaml"
    code, found, _ = doctor("--config", broken, "--tokenizer", toks["mistral-base"])
    message = found["new-token-untrained"]["message"]
    assert code == 1 and "<|im_end|>" in message and "lm_head" in message and message.startswith(f"{broken}:")
    fixed = config(tmp_path, "fixed.yaml", broken.read_text().replace("additional_target: embed_tokens\n", ""))
    code, found, _ = doctor("--config", fixed, "--tokenizer", toks["mistral-base"])
    assert code == 0 and not found
    # `new_special_tokens_config` (a YAML of tokens to descriptions) becomes `add_special_tokens`: resized, trained
    (tmp_path / "tokens.yaml").write_text("'<tool_call>': start of a tool call\n")
    unresized_text = fixed.read_text().replace("resize_vocab: true\n", "")
    described = config(tmp_path, "described.yaml", unresized_text + "new_special_tokens_config: tokens.yaml\n")
    code, found, report = doctor("--config", described, "--tokenizer", toks["mistral-base"])
    assert code == 0 and not found and "<tool_call>" in step(report, "tokenizer as llamafactory")["detail"]
    described.write_text(unresized_text + "new_special_tokens_config: missing.yaml\n")
    result = CliRunner().invoke(app, ["doctor", "--config", str(described), "--tokenizer", str(toks["mistral-base"])])
    assert result.exit_code == 2 and "missing.yaml: no such file" in result.output
    # A template's new stop words without `resize_vocab`: LLaMA-Factory only warns; their ids have no trained row.
    unresized = config(tmp_path, "unresized.yaml", fixed.read_text().replace("resize_vocab: true\n", ""))
    code, found, _ = doctor("--config", unresized, "--tokenizer", toks["mistral-base"])
    assert code == 1 and "not resized" in found["new-token-untrained"]["message"]


def test_config_takes_the_given_rows_and_template_arguments_and_refuses_what_does_not_combine(tmp_path):
    smol = smollm2_model_dir()
    lf = EXAMPLES / "llamafactory" / "smollm2-qwen.yaml"
    _, found, report = doctor("--config", lf, "--tokenizer", smol, "--prepared", LF / "cutoff" / "tokenized")
    assert report["facts"]["prepared"]["rows"] == 8 and "reply-header-missing" in found  # the rows given, audited
    assert found["reply-header-missing"]["fix"].startswith("LLaMA-Factory: a larger `cutoff_len`")
    qwen3 = tmp_path / "qwen3"
    family_tokenizer("qwen3").save_pretrained(qwen3)
    _, _, report = doctor("--config", lf, "--tokenizer", qwen3, "--template-arg", "enable_thinking=false")
    assert "template arguments {'enable_thinking': False}" in step(report, "chat template")["detail"]
    for args, words in (
        (["--config", lf, "--collator", "transformers"], "--collator does not combine with --config"),
        (["--gguf", "x.gguf", "--data", "c.jsonl"], "--data does not combine with --gguf"),
        (["--tokenizer", smol, "--data", "c.jsonl", "--prepared", "rows"], "--data does not combine with --prepared"),
        (["--modelfile", "Modelfile", "--max-length", "64"], "--max-length does not combine with --modelfile"),
        (
            ["--config", config(tmp_path, "both.yaml", "base_model: x\nmodel_name_or_path: y\n")],
            "axolotl's `base_model` at line 1",
        ),
    ):
        result = CliRunner().invoke(app, ["doctor", *map(str, args)])
        assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


def test_llamafactory_named_template_says_what_it_could_not_read_and_reads_it_where_installed(tmp_path, monkeypatch):
    """`template: qwen` on Qwen2.5 base (eos <|endoftext|>): LLaMA-Factory's `replace_eos` makes <|im_end|> the eos.
    Not installed here, the doctor says it could not read that; installed, it reads and applies it."""
    qwen = tmp_path / "qwen-base"
    family_tokenizer("qwen2.5", base=True).save_pretrained(qwen)
    path = config(tmp_path, "lf.yaml", "model_name_or_path: x\ntemplate: qwen\n")
    _, _, report = doctor("--config", path, "--tokenizer", qwen)
    detail = step(report, "tokenizer as llamafactory")["detail"]
    assert "`replace_eos`" in detail and "could not be read" in detail and "eos <|endoftext|>" in detail
    package = tmp_path / "site" / "llamafactory"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "template.py").write_text(
        'register_template(name="qwen", format_user=StringFormatter(slots=["<|im_start|>user\\n{{content}}<|im_end|>'
        '\\n<|im_start|>assistant\\n"]), format_assistant=StringFormatter(slots=["{{content}}<|im_end|>\\n"]), '
        'stop_words=["<|im_end|>"], replace_eos=True)\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _, _, report = doctor("--config", path, "--tokenizer", qwen)
    detail = step(report, "tokenizer as llamafactory")["detail"]
    assert "`replace_eos` makes <|im_end|> the eos" in detail and "could not be read" not in detail
