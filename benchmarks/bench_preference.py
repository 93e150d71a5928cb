"""`eosguard prepare` on preference pairs against TRL's own DPO preprocessing, whole commands as a user runs them.

Two commands, each a fresh process with a fresh `datasets` cache and output folder, run in turn `--repeats` times (the
ratio uses the median of each side):

- `eosguard prepare PAIRS --tokenizer TOK --out OUT` (default --num-proc: one process per core);
- `benchmarks/trl_dpo_prepare.py`: TRL 1.16's `DPOTrainer._prepare_dataset` on the same pairs and tokenizer, saved
  with `save_to_disk` (TRL's `dataset_num_proc` left at its default, as a user leaves it).

The data: seeded conversational pairs of realistic shape (a system prompt, 1-3 exchanges; the chosen reply the
conversation's last, the rejected one another conversation's), the real Mistral-7B tokenizer with the OpenHermes
ChatML tokens. Checked, row by row: both sides wrote the same `prompt_ids`, and the same completion through its
`<|im_end|>`; TRL's completions also hold the `\\n` the template writes after it (counted), eosguard's end at the
closing sequence.

Run as:
    python benchmarks/bench_preference.py [--n 20000] [--repeats 3] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_prepare import eosguard_command, timed_in_turn
from common import synthetic_conversations, write_result

from eosguard.testing.fixtures import openhermes_tokenizer

HERE = Path(__file__).parent


def write_pairs(n: int, path: Path) -> Path:
    convs = synthetic_conversations(n, seed=3, max_words=160)
    with path.open("w") as f:
        for i, c in enumerate(convs):
            other = convs[(i + 1) % len(convs)].messages[-1]
            prompt = [m.as_dict() for m in c.messages[:-1]]
            f.write(json.dumps({"prompt": prompt, "chosen": [c.messages[-1].as_dict()], "rejected": [other.as_dict()]}))
            f.write("\n")
    return path


def compare(ours: Path, theirs: Path, end: int) -> dict[str, int]:
    """Row by row: the same prompt ids; each completion the same through its closer, TRL's with what follows."""
    import datasets

    a, b = datasets.load_from_disk(str(ours)), datasets.load_from_disk(str(theirs))
    assert len(a) == len(b), f"{len(a)} rows against TRL's {len(b)}"
    assert a["prompt_ids"] == b["prompt_ids"], "prompt_ids differ from TRL's"
    trailing = 0
    for side in ("chosen_ids", "rejected_ids"):
        for x, y in zip(a[side], b[side], strict=True):
            cut = len(y) - 1 - y[::-1].index(end)  # TRL's completion through its last <|im_end|>
            assert x == y[: cut + 1], "a completion differs from TRL's through its closer"
            trailing += len(y) - cut - 1
    return {"rows": len(a), "trl_tokens_after_the_closer": trailing}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args()
    n, repeats = (100, 1) if a.smoke else (a.n, a.repeats)
    with tempfile.TemporaryDirectory(prefix="eosguard-bench-preference-") as tmp:
        work = Path(tmp)
        data = write_pairs(n, work / "pairs.jsonl")
        tok = openhermes_tokenizer(pad="unk")
        tok.eos_token = "<|im_end|>"  # TRL appends no eos to conversational pairs; this only keeps the sides alike
        tok.save_pretrained(work / "tok")
        commands = {
            "eosguard": [*eosguard_command(), "prepare", str(data), "--tokenizer", str(work / "tok"),
                         "--max-length", "4096"],
            "trl_dpo": [sys.executable, str(HERE / "trl_dpo_prepare.py"), str(data), str(work / "tok")],
        }  # fmt: skip
        seconds = timed_in_turn(commands, work, repeats)
        checked = compare(work / "out-eosguard", work / "out-trl_dpo", tok.convert_tokens_to_ids("<|im_end|>"))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "n_pairs": n,
        **checked,
        "same_prompt_ids_and_completions_through_the_closer": True,
        "seconds": seconds,
        "median_seconds": median,
        "ratios": {"eosguard_speedup_vs_trl_dpo": median["trl_dpo"] / median["eosguard"]},
        "goals": {"eosguard_speedup_vs_trl_dpo": "> 1 (whole processes)"},
    }
    path = write_result("preference" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"{n} pairs, medians {median} -> {path}")
    for k, v in result["ratios"].items():
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
