"""Stop-rate evaluation (batched equals one at a time) and the demo end to end in its quick mode."""

import json

import pytest
from typer.testing import CliRunner

from eosguard.checks.evaluate import evaluate_stopping
from eosguard.cli.app import app
from eosguard.data.records import load_conversations
from eosguard.testing.fixtures import tiny_mistral

runner = CliRunner()


def test_batched_generation_equals_one_at_a_time(tok, task_files):
    model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=1, eos_id=32000, pad_id=0)
    convs, _ = load_conversations(task_files["heldout"])
    convs = convs[:6]
    batched = evaluate_stopping(model, tok, convs, max_new_tokens=8, batch_size=6)
    single = evaluate_stopping(model, tok, convs, max_new_tokens=8, batch_size=1)
    assert [g.output for g in batched.generations] == [g.output for g in single.generations]
    assert batched.n == 6 and batched.runaway_rate == 1 - batched.stop_rate


@pytest.mark.slow
def test_quick_demo_and_eval_cli(quick_demo):
    out, report = quick_demo
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["n_eval"] == 40 and set(on_disk["runs"]) == {"base", "broken", "eosguard"}
    for run in on_disk["runs"].values():
        assert {
            "stop_rate",
            "runaway_rate",
            "role_leak_rate",
            "exact_match",
            "mean_new_tokens",
            "findings",
            "steps",
            "seconds",
        } <= set(run)
    assert {"eos-masked", "pad-is-eos"} <= set(report["runs"]["broken"]["findings"])
    assert report["runs"]["eosguard"]["findings"] == []
    # Even this short run shows the bug and the fix, on the same base model, data, steps and seed.
    assert report["runs"]["base"]["stop_rate"] >= 0.9
    assert report["runs"]["broken"]["stop_rate"] <= 0.1 <= 0.9 <= report["runs"]["eosguard"]["stop_rate"]
    for name in ("base", "broken", "eosguard"):
        assert (out / name / "model" / "model.safetensors").exists()
    assert (out / "report.png").stat().st_size > 1000 and (out / "heldout.jsonl").exists()

    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(out / "eosguard" / "model"),
            "--data",
            str(out / "heldout.jsonl"),
            "--max-new-tokens",
            "32",
            "--batch-size",
            "50",  # the demo's batches: the same generations, not only the same rates
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    # Progress goes to stderr as plain lines (no terminal here), so --json on stdout stays parseable.
    assert "generating: 40/40" in result.stderr
    measured = json.loads(result.stdout)
    assert measured["n"] == 40
    # The demo measures through the same entry as `eosguard eval`: one set of figures on the same generations.
    demo_run = report["runs"]["eosguard"]
    for key in ("stop_rate", "runaway_rate", "role_leak_rate", "exact_match", "mean_new_tokens", "p95_new_tokens"):
        assert measured[key] == demo_run[key], key
    by_task = {
        task: [g for g, row in zip(measured["generations"], _rows(out), strict=True) if row["task"] == task]
        for task in ("task:first", "task:count", "task:last")
    }
    old = by_task["task:first"] + by_task["task:count"]
    assert demo_run["by_task"]["old"]["exact_match"] == sum(
        g["stopped"] and g["output"].strip() == g["reference"].strip() for g in old
    ) / len(old)


def _rows(out):
    return [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]


def test_eval_bad_input(tmp_path, tiny_model_dir):
    result = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
