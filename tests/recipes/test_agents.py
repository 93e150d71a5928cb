"""`eosguard train` and `eosguard eval` on tool-calling, reasoning, multi-turn chats in Qwen3's and gpt-oss's formats.

A tiny model on each family's tokenizer (the real Tekken vocabulary with the family's real template) is trained a
few steps on agent chats (`eosguard.recipes.tasks.agent_conversations`: a reasoned tool call, its result, an answer, a
follow-up) with thinking on; the saved folder must stop on every stop token of its template, and `eosguard eval`
must measure final answers and tool calls apart.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eosguard.chat.templates import ChatTemplate
from eosguard.cli.app import app
from eosguard.recipes.tasks import ADD_TOOL, agent_conversations
from eosguard.testing.fixtures import family_tokenizer, tiny_mistral
from tests.conftest import DATA

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

runner = CliRunner()


def write(path, convs):
    path.write_text("".join(json.dumps({"messages": c.as_dicts()}) + "\n" for c in convs))  # tools: from the file
    return path


@pytest.mark.parametrize(("family", "stops"), [("qwen3", ["<|im_end|>"]), ("gpt-oss", ["<|return|>", "<|call|>"])])
def test_train_an_agent_and_measure_its_final_answers_and_tool_calls(family, stops, tmp_path):
    tok = family_tokenizer(family)
    model_dir = tmp_path / "base"
    tiny_mistral(
        len(tok), hidden=32, layers=1, heads=2, kv_heads=1, bos_id=None, eos_id=None, pad_id=None
    ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    train = write(tmp_path / "train.jsonl", agent_conversations(12, seed=1))
    heldout = write(
        tmp_path / "heldout.jsonl", [*agent_conversations(3, seed=2), *agent_conversations(3, seed=3, end_on_call=True)]
    )
    (tmp_path / "tools.json").write_text(json.dumps([ADD_TOOL]))
    sets = {
        "model": model_dir,
        "data.train": f"[{train}]",
        "data.eval": f"[{heldout}]",
        "data.tools": tmp_path / "tools.json",
        "output_dir": tmp_path / "run",
        "max_length": 1024,
        "max_steps": 3,
        "batch_size": 4,
        "max_new_tokens": 4,
    }
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "replies trained in examples of their own" in result.output  # both render earlier turns differently
    folder = tmp_path / "run" / "model"
    saved = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    template = ChatTemplate(family_tokenizer(family))
    assert template.stop_tokens == stops and set(template.stop_ids) <= set(saved)
    summary = json.loads((folder / "eosguard.json").read_text())
    assert set(summary["eval"]["by_kind"]) == {"reply", "tool_call"}

    evaluate = ["eval", "--model", str(folder), "--data", str(heldout), "--max-new-tokens", "4"]
    evaluate += ["--tools", str(tmp_path / "tools.json")]
    out = runner.invoke(app, [*evaluate, "--json"])
    assert out.exit_code == 0, out.output
    report, _ = json.JSONDecoder().raw_decode(out.output[out.output.index("{") :])  # progress lines may follow
    assert report["n"] == 6 and {k: v["n"] for k, v in report["by_kind"].items()} == {"reply": 3, "tool_call": 3}
    table = runner.invoke(app, evaluate)
    assert table.exit_code == 0 and "tool calls" in table.output and "final answers" in table.output
