"""The doctor on what other frameworks wrote: LLaMA-Factory's own tokenized output (tests/inputs/llamafactory/, made
by its `get_template_and_fix_tokenizer` + `get_dataset` in a venv of its own: make.py there), and the axolotl and
LLaMA-Factory configs in examples/, each stop-token setting reported with its line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.testing.fixtures import family_tokenizer, smollm2_model_dir

ROOT = Path(__file__).parents[2]
LF = ROOT / "tests" / "inputs" / "llamafactory"
EXAMPLES = ROOT / "examples"


def doctor(*args) -> tuple[int, dict, dict]:
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    return result.exit_code, {f["id"]: f for f in report["findings"]}, report


@pytest.fixture(scope="module")
def lf_tokenizer(tmp_path_factory) -> Path:
    """The tokenizer LLaMA-Factory wrote with `template: default`: its chat template over SmolLM2's vocabulary."""
    folder = tmp_path_factory.mktemp("lf") / "tokenizer"
    shutil.copytree(LF / "default" / "tokenizer", folder)
    shutil.copy(smollm2_model_dir() / "tokenizer.json", folder / "tokenizer.json")
    return folder


def test_llamafactory_qwen_template_on_smollm2_passes():
    code, found, report = doctor("--tokenizer", smollm2_model_dir(), "--prepared", LF / "qwen" / "tokenized")
    facts = report["facts"]["prepared"]
    assert code == 0 and not found
    assert facts["rows"] == 8 and facts["trained_replies"] == facts["stop_trained"] == 10  # two chats have two turns


def test_llamafactory_default_template_is_another_format_than_smollm2s(lf_tokenizer):
    code, found, _ = doctor("--tokenizer", smollm2_model_dir(), "--prepared", LF / "default" / "tokenized")
    assert code == 1 and found["template-mismatch"]["count"] == 8
    assert "Human: Add: 79 + 32" in found["template-mismatch"]["message"]  # the row beside the template's rendering
    code, found, report = doctor("--tokenizer", lf_tokenizer, "--prepared", LF / "default" / "tokenized")
    assert code == 0 and not found and report["facts"]["prepared"]["stop_trained"] == 10


def test_llamafactory_cutoff_keeps_the_reply_and_cuts_its_prompt():
    code, found, _ = doctor("--tokenizer", smollm2_model_dir(), "--prepared", LF / "cutoff" / "tokenized")
    assert code == 1 and found["reply-header-missing"]["count"] == 8


def _lines(path: Path, *keys: str) -> list[str]:
    text = path.read_text().splitlines()
    return [f"{path}:{next(i for i, line in enumerate(text, 1) if line.lstrip().startswith(k + ':'))}" for k in keys]


def test_axolotl_config_reports_each_stop_token_setting_with_its_line(tmp_path):
    family_tokenizer("gemma").save_pretrained(tmp_path / "gemma")
    broken = EXAMPLES / "axolotl" / "gemma-eot-masked.yaml"
    code, found, report = doctor("--config", broken, "--tokenizer", tmp_path / "gemma")
    eot, train_on_eos, excess = _lines(broken, "eot_tokens", "train_on_eos", "excess_length_strategy")
    masks = [f["message"] for f in report["findings"] if f["id"] == "config-masks-stop"]
    assert code == 1 and any(m.startswith(eot) and "<end_of_turn>" in m for m in masks)
    assert any(m.startswith(train_on_eos) and "train_on_eos: turn" in m for m in masks)
    assert found["truncation-drops-eos"]["message"].startswith(excess)
    step = next(s for s in report["steps"] if s["title"] == "axolotl config")
    assert "eot_tokens: ['<eos>']" in step["detail"] and "line" in step["detail"]
    code, found, _ = doctor("--config", EXAMPLES / "axolotl" / "gemma-fixed.yaml", "--tokenizer", tmp_path / "gemma")
    assert code == 0 and not {"config-masks-stop", "config-stop-unnamed", "truncation-drops-eos"} & set(found)


def test_llamafactory_config_and_its_tokenized_path(tmp_path):
    example = EXAMPLES / "llamafactory" / "smollm2-lora-new-tokens.yaml"
    code, found, _ = doctor("--config", example, "--tokenizer", smollm2_model_dir())
    (prompt,) = _lines(example, "train_on_prompt")
    assert code == 0 and set(found) == {"prompt-trained"}  # its new tokens: LLaMA-Factory trains their rows itself
    assert found["prompt-trained"]["message"].startswith(prompt)
    # The run's own files local: the model folder and its tokenized_path (LLaMA-Factory's output) are read too.
    for name, expected in (("qwen", 0), ("cutoff", 1)):
        config = tmp_path / f"{name}.yaml"
        text = (EXAMPLES / "llamafactory" / "smollm2-qwen.yaml").read_text()
        text = text.replace("HuggingFaceTB/SmolLM2-135M-Instruct", str(smollm2_model_dir()))
        config.write_text(text.replace("saves/smollm2/tokenized", str(LF / name / "tokenized")))
        code, found, report = doctor("--config", config)
        assert code == expected and report["facts"]["prepared"]["rows"] == 8, found
    assert "reply-header-missing" in found


def test_a_bad_config_exits_2_with_its_place(tmp_path):
    cases = {
        "bad.yaml": ("base_model: x\ndatasets:\n  - path: a\n   type: b\n", "bad.yaml:4: malformed YAML"),
        "other.yaml": ("lr: 1\n", "neither an axolotl config"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        result = CliRunner().invoke(app, ["doctor", "--config", str(tmp_path / name)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
