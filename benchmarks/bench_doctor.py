"""`eosguard doctor --prepared` on a large folder, as a user runs it, against reading the same columns with Arrow.

Writes a `datasets` folder of N rows (SmolLM2's tokenizer; eosguard's rows of seeded multi-turn chats, one reply in
fifty with its `<|im_end|>` label set to -100, so the audit has something to count), then times two whole commands
in fresh processes (imports included), interleaved, `--repeats` times each (medians reported):

- `eosguard doctor --tokenizer T --prepared F --json`: every row read and audited;
- the anchor: `datasets.load_from_disk(F)` and the same two columns, `input_ids` and `labels`, read as Arrow and
  numpy arrays (every token touched once: the count of trained labels), the fastest read of them `datasets` offers.
  (`Dataset.iter`, which makes a Python int of every token, is several times slower as a whole command, and a
  hundred times slower on the rows alone: a ratio against it says little; docs/performance.md has the figures.)

Both again on a folder of the first 100 rows: their start-up (imports, the tokenizer and its template for the doctor),
so that the cost of the rows themselves reads apart (`marginal`: each command's time less its start-up).

The doctor must count exactly the masked replies it was given. Goal: doctor / anchor <= 3 (the audit costs no more
than a few reads of the data).

Run as:
    python benchmarks/bench_doctor.py [--rows 100000] [--repeats 3] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import synthetic_conversations, write_result

ANCHOR = """
import sys, datasets, numpy as np
ds = datasets.load_from_disk(sys.argv[1]).with_format("arrow")
table = ds[0 : len(ds)]
n = 0
for name in ("input_ids", "labels"):
    for chunk in table.column(name).chunks:
        n += int(np.count_nonzero(chunk.flatten().to_numpy() != -100))
print(n)
"""


def build(folder: Path, rows: int) -> tuple[Path, int, int]:
    """The rows (chats rendered once and repeated, every 50th reply's stop label masked): the tokenizer, how many
    replies were masked, how many tokens the rows hold."""
    import datasets

    from eosguard.chat.render import ChatRenderer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    prepare_tokenizer(tok)
    tok.save_pretrained(folder / "tokenizer")
    examples = [r.to_example() for r in ChatRenderer(tok).examples(synthetic_conversations(500, seed=3))]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    masked = tokens = 0

    def gen():
        nonlocal masked, tokens
        for i in range(rows):
            ex = examples[i % len(examples)]
            tokens += len(ex["input_ids"])
            labels = ex["labels"]
            if i % 50 == 0:  # the first closing <|im_end|> of this row at -100
                at = next(
                    k for k, (t, y) in enumerate(zip(ex["input_ids"], labels, strict=True)) if t == end and y == t
                )
                labels = [*labels[:at], -100, *labels[at + 1 :]]
                masked += 1
            yield {"input_ids": ex["input_ids"], "labels": labels}

    # A cache of its own: from the user's cache, `datasets` would hand back an earlier run's rows without calling
    # `gen`, and `masked` would stay 0.
    features = datasets.Features(
        {"input_ids": datasets.Sequence(datasets.Value("int32")), "labels": datasets.Sequence(datasets.Value("int32"))}
    )
    ds = datasets.Dataset.from_generator(gen, features=features, cache_dir=str(folder / "cache"))
    ds.save_to_disk(str(folder / "rows"))
    return folder / "tokenizer", masked, tokens


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def commands(tok: Path, rows: Path) -> dict[str, list[str]]:
    doctor = ["-m", "eosguard", "doctor", "--tokenizer", str(tok), "--prepared", str(rows), "--json"]
    return {"doctor": [sys.executable, *doctor], "arrow_read": [sys.executable, "-c", ANCHOR, str(rows)]}


def versions() -> dict[str, str]:
    import datasets
    import numpy
    import pyarrow

    return {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    if a.smoke:
        a.rows, a.repeats = 2000, 1
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        import datasets

        tok, masked, tokens = build(Path(tmp), a.rows)
        datasets.load_from_disk(str(Path(tmp) / "rows")).select(range(100)).save_to_disk(str(Path(tmp) / "small"))
        full, small = commands(tok, Path(tmp) / "rows"), commands(tok, Path(tmp) / "small")
        for _ in range(a.repeats):  # interleaved: a shared machine's load falls on every side alike
            for name in ("arrow_read", "doctor"):
                seconds, out = timed(full[name])
                runs.setdefault(name, []).append(seconds)
                if name == "doctor":
                    report = json.loads(out)
                seconds, _ = timed(small[name])
                runs.setdefault(f"{name}_start", []).append(seconds)
    counted = next(f["count"] for f in report["findings"] if f["id"] == "eos-masked")
    assert counted == masked, (counted, masked)  # the audit counts exactly what was masked
    t = {k: statistics.median(v) for k, v in runs.items()}
    marginal = {k: t[k] - t[f"{k}_start"] for k in ("doctor", "arrow_read")}
    result = {
        "rows": a.rows,
        "tokens": tokens,
        "replies": report["facts"]["prepared"]["replies"],
        "masked_replies": masked,
        "counted": counted,
        "seconds": t,
        "runs": runs,
        "marginal_seconds": marginal,
        "ratios": {"doctor_over_arrow_read": t["doctor"] / t["arrow_read"]},
        "marginal_ratio": marginal["doctor"] / marginal["arrow_read"] if marginal["arrow_read"] > 0 else None,
        "goals": {"doctor_over_arrow_read": "<= 3", "counted": "every masked reply (asserted)"},
        "versions": versions(),
    }
    path = write_result("doctor" + ("-smoke" if a.smoke else ""), result, a.out)
    print(
        f"-> {path}\n  doctor {t['doctor']:.2f} s, Arrow read {t['arrow_read']:.2f} s: "
        f"{t['doctor'] / t['arrow_read']:.2f}x; start-up {t['doctor_start']:.2f} s vs {t['arrow_read_start']:.2f} s; "
        f"the rows alone {marginal['doctor']:.2f} s vs {marginal['arrow_read']:.2f} s"
    )


if __name__ == "__main__":
    main()
