"""The benchmarks run in their smoke mode (tiny sizes): the scripts work and their built-in checks hold.

The figures themselves are measured by running the scripts in full (README, "Performance"); not timed here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.parametrize("name", ["prepare", "train", "eval"])
def test_benchmark_smoke(name, tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / f"bench_{name}.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}-smoke.json").read_text())
    assert result["ratios"] and all(v > 0 for v in result["ratios"].values())
    assert result["environment"]["torch"]
    if name == "train":  # same loss per token on both sides (the same examples, init and steps)
        assert abs(result["ratios"]["mean_loss"] - 1) < 0.01


def test_train_benchmark_two_processes_smoke(tmp_path):
    """`bench_train.py --nproc 2` under torchrun: both sides ran the same steps to the same loss."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_train.py"), "--nproc", "2", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "train-nproc2-smoke.json").read_text())
    assert result["nproc"] == 2 and abs(result["ratios"]["mean_loss"] - 1) < 1e-4


@pytest.mark.parametrize("name", ["real", "attention"])
def test_real_model_benchmarks_smoke(name, tmp_path):
    """The SmolLM2 benchmarks run end to end (one step a side; one pass per attention option)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / f"bench_{name}.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}-smoke.json").read_text())
    if name == "real":
        sides = result["bf16"]["sides"]
        assert sides["eosguard"]["trained_tokens"] == sides["trl"]["trained_tokens"] > 0  # the same supervision
        assert result["bf16"]["ratios"]["epoch_speed"] > 0
    else:
        assert result["sides"]["packed-sdpa"]["available"] and result["fastest_correct"] in result["sides"]
        assert result["sides"]["packed-flex"]["available"] in (True, False)
