"""The benchmarks run in their smoke mode (tiny sizes): the scripts work and their built-in checks hold.

The figures themselves are measured by running the scripts in full (docs/performance.md); not timed here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

BENCH = Path(__file__).parent.parent / "benchmarks"


def smoke(script: str, result_name: str, out: Path, *args: str) -> dict:
    """Run `benchmarks/bench_<script>.py --smoke` as a user would and return the JSON it wrote."""
    done = subprocess.run(
        [sys.executable, str(BENCH / f"bench_{script}.py"), *args, "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / f"{result_name}-smoke.json").read_text())


@pytest.mark.parametrize("name", ["prepare", "train", "eval", "doctor", "preference"])
def test_benchmark_smoke(name, tmp_path):
    result = smoke(name, name, tmp_path)
    assert result["ratios"] and all(v > 0 for v in result["ratios"].values())
    assert result["environment"]["torch"]
    if name == "train":  # same loss per token on both sides (the same examples, init and steps)
        assert abs(result["ratios"]["mean_loss"] - 1) < 0.01
    if name == "doctor":  # every masked reply counted; both commands timed on the rows and on their start-up alone
        assert result["counted"] == result["masked_replies"] > 0 and result["replies"] > result["counted"]
        assert set(result["seconds"]) == {"doctor", "doctor_start", "arrow_read", "arrow_read_start"}
    if name == "preference":  # TRL's DPO preprocessing and eosguard prepare wrote the same rows through each closer
        assert result["same_prompt_ids_and_completions_through_the_closer"] and result["rows"] == result["n_pairs"]
        assert result["trl_tokens_after_the_closer"] == 2 * result["n_pairs"]  # TRL keeps the template's `\n`
    if name == "prepare":  # the whole commands wrote the same ids and labels
        assert result["identical_input_ids_and_labels"] and set(result["train_peak_rss_mb"]) == {"50", "500"}


def test_train_benchmark_two_processes_smoke(tmp_path):
    """`bench_train.py --nproc 2` under torchrun: both sides ran the same steps to the same loss."""
    result = smoke("train", "train-nproc2", tmp_path, "--nproc", "2")
    assert result["nproc"] == 2 and abs(result["ratios"]["mean_loss"] - 1) < 1e-4


def test_real_model_benchmark_smoke(tmp_path):
    """SmolLM2, one step a side: both sides supervise the same tokens."""
    sides = smoke("real", "real", tmp_path)["bf16"]["sides"]
    assert sides["eosguard"]["trained_tokens"] == sides["trl"]["trained_tokens"] > 0
    assert sides["eosguard"]["train_seconds"] > 0 and sides["trl"]["train_seconds"] > 0
    assert sides["eosguard"]["train_seconds_runs"] == [sides["eosguard"]["train_seconds"]]  # one repeat: that run
    # packing: batch takes TRL's steps, on fewer positions than TRL's padded batches
    assert sides["eosguard-batch"]["steps"] == sides["trl"]["steps"]
    assert sides["eosguard-batch"]["trained_tokens"] == sides["trl"]["trained_tokens"]
    assert sides["eosguard-batch"]["positions"] <= sides["trl"]["positions"]


def test_attention_benchmark_smoke(tmp_path):
    """One pass per attention option; one that torch cannot run is recorded as unavailable, not as fast."""
    result = smoke("attention", "attention", tmp_path)
    assert result["sides"]["packed-sdpa"]["available"] and result["fastest_correct"] in result["sides"]
    assert all("seconds" in v or "why" in v for v in result["sides"].values())
