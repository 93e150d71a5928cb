"""`eosguard prepare` as a user runs it: whole processes, start-up included, against the TRL-path script and the floor.

Three commands, each a fresh process with a fresh `datasets` cache and output folder, run in turn `--repeats` times
(this machine's timings drift by 10-20% between runs, so the ratios use the median of each side):

- `eosguard prepare DATA --tokenizer TOK --out OUT` (default --num-proc: one process per core);
- `benchmarks/trl_prepare.py`: TRL's conversational preprocessing as a script does it (`datasets.load_dataset`,
  `apply_chat_template(..., return_assistant_tokens_mask=True)` in `Dataset.map`, labels from the mask,
  `save_to_disk`), with the same tokenizer and its template marked with `{% generation %}`;
- the anchor `benchmarks/encode_only.py`: the tokenizer's own `encode_batch` on the already-rendered text, plus
  reading it and writing the ids with pyarrow: the floor for any pipeline that tokenizes this text.

The data: seeded multi-turn conversations, the real Mistral-7B tokenizer (from `mistral-common`) with the OpenHermes
ChatML tokens. Checked: eosguard's and TRL's `input_ids` and `labels` are identical, row for row. Also measured:
peak RSS of `eosguard prepare`, and of `eosguard train` on its output (`data.prepared`, packed, a tiny model, 4 steps),
at 2,000 and 20,000 conversations: both should be flat in the number of conversations.

Run as:
    python benchmarks/bench_prepare.py [--n 20000] [--repeats 3] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import CHATML_TRAINING_TEMPLATE, synthetic_conversations, write_result

from eosguard.chat.render import IGNORE_INDEX
from eosguard.testing.fixtures import openhermes_tokenizer, tiny_mistral

HERE = Path(__file__).parent


def write_data(n: int, path: Path, *, max_words: int = 200) -> Path:
    with path.open("w") as f:
        for c in synthetic_conversations(n, seed=1, max_words=max_words):
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    return path


def eosguard_command() -> list[str]:
    script = Path(sys.executable).with_name("eosguard")  # the console script of this environment
    return [str(script)] if script.exists() else [sys.executable, "-m", "eosguard"]


# Run in a fresh wrapper process, so that its children's peak RSS is this command's alone.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
print(json.dumps({"rc": done.returncode, "seconds": seconds,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def timed(cmd: list[str], work: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, of the largest process of the run) of one command, with a fresh `datasets`
    cache (so no side reuses an earlier run's Arrow files)."""
    cache = work / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, capture_output=True, text=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {"rc": done.returncode}
    if measured["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return measured["seconds"], measured["peak_rss_kb"] / 1024


def timed_in_turn(commands: dict[str, list[str]], work: Path, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each command, `repeats` times, run in turn so that drift on the machine touches every side
    alike; each writes a fresh `work/out-NAME` (`--out` for eosguard's commands, the last argument for the others)."""
    seconds: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            out = work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            flag = ["--out", str(out)] if name == "eosguard" else [str(out)]
            seconds[name].append(timed([*cmd, *flag], work)[0])
    return seconds


def rows(folder: Path) -> tuple[list[list[int]], list[list[int]]]:
    import datasets

    ds = datasets.load_from_disk(str(folder))
    return ds["input_ids"], ds["labels"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args()
    n, repeats = (200, 1) if a.smoke else (a.n, a.repeats)

    with tempfile.TemporaryDirectory(prefix="eosguard-bench-prepare-") as tmp:
        work = Path(tmp)
        data = write_data(n, work / "chats.jsonl")
        tok = openhermes_tokenizer()
        tok.save_pretrained(work / "tok")
        tok.chat_template = CHATML_TRAINING_TEMPLATE  # the same ChatML, with TRL's {% generation %} markers
        tok.save_pretrained(work / "tok-trl")
        with (work / "rendered.jsonl").open("w") as f:  # the anchor's input: the text the template renders
            for line in data.read_text().splitlines():
                msgs = json.loads(line)["messages"]
                f.write(json.dumps(tok.apply_chat_template(msgs, tokenize=False)) + "\n")

        commands = {
            "eosguard": [*eosguard_command(), "prepare", str(data), "--tokenizer", str(work / "tok")],
            "trl_script": [sys.executable, str(HERE / "trl_prepare.py"), str(data), str(work / "tok-trl")],
            "encode_only": [
                sys.executable,
                str(HERE / "encode_only.py"),
                str(work / "rendered.jsonl"),
                str(work / "tok"),
            ],
        }
        seconds = timed_in_turn(commands, work, repeats)

        ours, theirs = rows(work / "out-eosguard"), rows(work / "out-trl_script")
        assert ours[0] == theirs[0], "input_ids differ from the TRL path"
        assert ours[1] == theirs[1], "labels differ from the TRL path"
        n_tokens = sum(len(r) for r in ours[0])
        n_trained = sum(sum(y != IGNORE_INDEX for y in r) for r in ours[1])

        # Memory against data size: `eosguard prepare`, then `eosguard train` on the prepared folder (a tiny model,
        # a few packed steps: what grows with the number of conversations is built before the first step).
        small, large = (50, 500) if a.smoke else (2000, 20000)
        model = work / "model"
        tiny_mistral(len(tok), hidden=64, layers=2, bos_id=tok.bos_token_id, eos_id=2, pad_id=None).save_pretrained(
            model
        )
        openhermes_tokenizer().save_pretrained(model)
        rss, train_rss = {}, {}
        for size in (small, large):
            sized = write_data(size, work / f"chats-{size}.jsonl")
            folder = work / f"prepared-{size}"
            cmd = [*eosguard_command(), "prepare", str(sized), "--tokenizer", str(work / "tok"), "--out", str(folder)]
            rss[size] = timed(cmd, work)[1]
            config = work / f"train-{size}.yaml"
            config.write_text(
                f"model: {model}\ndata:\n  prepared: {folder}\nmax_length: 2048\npacking: true\n"
                f"max_steps: 4\nbatch_size: 8\noutput_dir: {work / f'trained-{size}'}\n"
            )
            train_rss[size] = timed([*eosguard_command(), "train", str(config)], work)[1]

    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "n_conversations": n,
        "n_tokens": n_tokens,
        "n_trained_tokens": n_trained,
        "identical_input_ids_and_labels": True,
        "num_proc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "seconds": seconds,
        "median_seconds": median,
        "prepare_peak_rss_mb": {str(k): v for k, v in rss.items()},
        "train_peak_rss_mb": {str(k): v for k, v in train_rss.items()},
        "ratios": {
            "eosguard_speedup_vs_trl_script": median["trl_script"] / median["eosguard"],
            "eosguard_time_vs_encode_only": median["eosguard"] / median["encode_only"],
            "prepare_peak_rss_10x_data": rss[large] / rss[small],
            "train_peak_rss_10x_data": train_rss[large] / train_rss[small],
        },
        "goals": {
            "eosguard_speedup_vs_trl_script": ">= 3 (whole processes)",
            "eosguard_time_vs_encode_only": "<= 1.5",
            "prepare_peak_rss_10x_data": "~1 (flat: streamed)",
            "train_peak_rss_10x_data": "~1 (flat: read on demand)",
        },
    }
    path = write_result("prepare" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"{n} conversations, {n_tokens} tokens, medians {median} -> {path}")
    for k, v in result["ratios"].items():
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
