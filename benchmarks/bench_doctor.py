"""`eosguard doctor --prepared` on a large folder, as a user runs it, against reading the same folder with `datasets`.

Writes a `datasets` folder of N rows (SmolLM2's tokenizer; eosguard's rows of seeded multi-turn chats, one reply in
fifty with its `<|im_end|>` label set to -100, so the audit has something to count), then times two whole commands
in fresh processes (imports included):

- `eosguard doctor --tokenizer T --prepared F --json`: every row read and audited;
- the anchor: `datasets.load_from_disk(F)` and every row's `input_ids` and `labels` read in batches of 4096 with
  `Dataset.iter`, the least any tool that looks at the rows does.

The doctor must count exactly the masked replies it was given. Goal: doctor / anchor <= 3 (the audit costs no more
than a few reads of the data).

Run as:
    python benchmarks/bench_doctor.py [--rows 100000] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import synthetic_conversations, write_result

ANCHOR = """
import sys, datasets
ds = datasets.load_from_disk(sys.argv[1])
n = 0
for batch in ds.iter(batch_size=4096):
    n += sum(len(ids) for ids in batch["input_ids"]) + sum(len(y) for y in batch["labels"])
print(n)
"""


def build(folder: Path, rows: int) -> tuple[Path, int]:
    """The rows (chats rendered once and repeated, every 50th reply's stop label masked) and the tokenizer."""
    import datasets

    from eosguard.chat.render import ChatRenderer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.testing.fixtures import smollm2_tokenizer

    tok = smollm2_tokenizer()
    prepare_tokenizer(tok)
    tok.save_pretrained(folder / "tokenizer")
    examples = [r.to_example() for r in ChatRenderer(tok).examples(synthetic_conversations(500, seed=3))]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    masked = 0

    def gen():
        nonlocal masked
        for i in range(rows):
            ex = examples[i % len(examples)]
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
    return folder / "tokenizer", masked


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    if a.smoke:
        a.rows = 2000
    with tempfile.TemporaryDirectory() as tmp:
        tok, masked = build(Path(tmp), a.rows)
        rows = Path(tmp) / "rows"
        t_anchor, _ = timed([sys.executable, "-c", ANCHOR, str(rows)])
        doctor = [
            sys.executable,
            "-m",
            "eosguard",
            "doctor",
            "--tokenizer",
            str(tok),
            "--prepared",
            str(rows),
            "--json",
        ]
        t_doctor, out = timed(doctor)
    report = json.loads(out)
    counted = next(f["count"] for f in report["findings"] if f["id"] == "eos-masked")
    assert counted == masked, (counted, masked)  # the audit counts exactly what was masked
    result = {
        "rows": a.rows,
        "masked_replies": masked,
        "counted": counted,
        "seconds": {"doctor": t_doctor, "datasets_read": t_anchor},
        "ratios": {"doctor_over_datasets_read": t_doctor / t_anchor},
        "goals": {"doctor_over_datasets_read": "<= 3", "counted": "every masked reply (asserted)"},
    }
    path = write_result("doctor" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"-> {path}\n  doctor {t_doctor:.1f} s, datasets alone {t_anchor:.1f} s: {t_doctor / t_anchor:.2f}x")


if __name__ == "__main__":
    main()
