"""`eosguard fix`: metadata repaired in a copy, and the stop rate measured before and after on the real SmolLM2.

Each case is a setup the weights stop in but the metadata hides: the repair must raise the measured stop rate. The
demo's broken model (trained with its stop token masked) is the case metadata cannot repair; it is measured in
tests/recipes/test_real_model.py through the demo.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.recipes.fix import fix
from eosguard.recipes.tasks import split_tasks
from eosguard.serve.gguf_files import EOT, read_gguf
from eosguard.testing.fixtures import smollm2_gguf_path, smollm2_model_dir
from tests.helpers import gguf_with_unknown_end_of_turn

runner = CliRunner()


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    convs = split_tasks(["first", "last"], 0, 8, seed=3)[1]
    path = tmp_path_factory.mktemp("data") / "heldout.jsonl"
    path.write_text("".join(json.dumps({"messages": c.as_dicts()}) + "\n" for c in convs))
    return path


@pytest.mark.slow
def test_a_folder_whose_eos_is_not_its_end_of_turn(tmp_path, heldout):
    """SmolLM2 with eos set to `<|endoftext|>` in tokenizer, config and generation config (a common export
    mistake): generation runs past `<|im_end|>`. The fix makes `<|im_end|>` the eos and the stop id again."""
    folder = tmp_path / "wrong"
    shutil.copytree(smollm2_model_dir(), folder)
    for name, key in [("tokenizer_config.json", "eos_token"), ("config.json", "eos_token_id")]:
        data = json.loads((folder / name).read_text())
        data[key] = "<|endoftext|>" if key == "eos_token" else 0
        (folder / name).write_text(json.dumps(data))
    gen = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": 0}))

    report = fix(folder, tmp_path / "fixed", data=[str(heldout)], max_new_tokens=24)
    assert "tokenizer eos: <|endoftext|> -> <|im_end|> (the template's end of turn)" in report.changes
    assert any(c.startswith("generation_config eos_token_id: 0 -> [2, 0]") for c in report.changes), report.changes
    assert report.before is not None and report.after is not None
    assert report.before <= 0.25 and report.after >= 0.75, (report.before, report.after)
    assert json.loads((tmp_path / "fixed" / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 0  # the source untouched
    # No tensor changes shape: a served model needs no pad, and adapters or quantized files made for the original
    # must still fit (#28: fix used to add a <pad> row).
    assert _shapes(tmp_path / "fixed") == _shapes(folder)
    assert any(c.startswith("tokenizer pad: kept as <|im_end|>") for c in report.changes), report.changes
    grown = fix(folder, tmp_path / "with-pad", add_pad=True)
    assert (
        _shapes(tmp_path / "with-pad")["model.embed_tokens.weight"][0]
        == _shapes(folder)["model.embed_tokens.weight"][0] + 1
    )
    assert any(c.startswith("embeddings: a row for the new pad <pad>") for c in grown.changes)


def _shapes(folder) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)


@pytest.mark.slow
def test_a_gguf_whose_end_of_turn_llama_cpp_does_not_know(tmp_path, heldout):
    pytest.importorskip("xllamacpp", reason="llama.cpp's server: pip install 'eosguard[serve]'")
    broken = gguf_with_unknown_end_of_turn(smollm2_gguf_path(), tmp_path / "renamed.gguf")
    args = [
        "fix",
        "--model",
        str(broken),
        "--out",
        str(tmp_path / "fixed.gguf"),
        "--data",
        str(heldout),
        "--max-new-tokens",
        "24",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "eot_token_id: unset -> 2 ('<|turn_end|>')" in result.output
    before, after = (float(x) for x in _rates(result.output))
    assert before <= 25 and after >= 75, result.output  # measured in llama.cpp, before and after
    assert read_gguf(tmp_path / "fixed.gguf").ids[EOT] == 2


def test_refuses_to_overwrite_and_names_a_missing_target(tmp_path):
    (tmp_path / "exists").mkdir()
    over = runner.invoke(app, ["fix", "--model", str(smollm2_model_dir()), "--out", str(tmp_path / "exists")])
    assert over.exit_code == 2 and "never over one" in over.output
    missing = runner.invoke(app, ["fix", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "new")])
    assert missing.exit_code == 2 and "no such model folder or GGUF file" in missing.output
    assert "Traceback" not in over.output + missing.output


def _rates(output: str) -> list[str]:
    line = next(x for x in output.splitlines() if x.startswith("stop rate on the held-out prompts"))
    return [w.rstrip("%,") for w in line.split() if w.rstrip("%,").isdigit()]
