"""Training throughput: eosguard (padding-free packing + loss at labelled positions) vs TRL SFTTrainer (padding).

Both train the same tiny Mistral (the real 32k Mistral vocabulary, fixed seed) on the same seeded conversations,
the same examples per step and the same number of steps, with assistant-only loss. Each side runs in its own
process so peak memory (max RSS) is its own. Reported: trained (labelled) tokens per second, mean loss per trained
token (must agree within noise), peak RSS, and the ratio measured in this one run.

`--nproc N` instead measures eosguard's trainer alone, one process against N processes under torchrun (DDP on
gloo, the same global batch: `--batch` split across the processes), and reports both throughputs. On a CPU machine the
processes share the same cores (torchrun gives each one thread), so this shows the cost of the extra process more
than a speed-up; on N GPUs each process has its own device.

Run as:
    python benchmarks/bench_train.py [--steps 30] [--batch 8] [--smoke] [--out benchmarks/results]
    python benchmarks/bench_train.py --nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import CHATML_TRAINING_TEMPLATE, counting_collator, synthetic_conversations, trl_anchor_config, write_result


def _model(tok):
    """The demo's tiny Mistral (hidden 128, 2 layers) on the full 32k Mistral vocabulary, seeded."""
    from eosguard.testing.fixtures import tiny_mistral

    return tiny_mistral(len(tok), bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)


def run_side(side: str, steps: int, batch: int, n: int) -> dict:
    import torch
    from transformers import TrainerCallback

    from eosguard.testing.fixtures import demo_tokenizer

    torch.set_num_threads(torch.get_num_threads())
    tok = demo_tokenizer()
    convs = synthetic_conversations(n, seed=0, max_words=60)
    model = _model(tok)
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    if side == "eosguard":
        from eosguard.chat.render import ChatRenderer
        from eosguard.training.collate import PackedCollator
        from eosguard.training.trainer import EosguardTrainer, _ListDataset, training_arguments

        examples = [r.to_example() for r in ChatRenderer(tok).examples(convs)]
        args = training_arguments(
            "/tmp/eosguard-bench-train", steps=steps, lr=1e-3, batch_size=batch, seed=0, logging_steps=1, progress=False
        )
        model.config.use_cache = False
        trainer = EosguardTrainer(
            model=model,
            args=args,
            train_dataset=_ListDataset(examples),
            data_collator=PackedCollator(),
            processing_class=tok,
            callbacks=[Record()],
        )
    else:
        import datasets
        from trl import SFTTrainer

        tok.chat_template = CHATML_TRAINING_TEMPLATE
        args = trl_anchor_config(
            "/tmp/eosguard-bench-trl",
            batch=batch,
            lr=1e-3,
            scheduler="constant_with_warmup",
            max_length=None,
            max_steps=steps,
            bf16=False,
        )
        ds = datasets.Dataset.from_list([{"messages": c.as_dicts()} for c in convs])
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Record()])

    counted = {"trained": 0, "positions": 0}
    trainer.data_collator = counting_collator(trainer.data_collator, counted)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    if torch.distributed.is_initialized():  # under torchrun: every process's tokens, the slowest process's time
        totals = torch.tensor([counted["trained"], counted["positions"]], dtype=torch.float64)
        torch.distributed.all_reduce(totals)
        counted["trained"], counted["positions"] = int(totals[0]), int(totals[1])
        slowest = torch.tensor([seconds], dtype=torch.float64)
        torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
        seconds = float(slowest[0])
    return {
        "seconds": seconds,
        "trained_tokens": counted["trained"],
        "positions": counted["positions"],
        "trained_tokens_per_second": counted["trained"] / seconds,
        "mean_loss": sum(losses) / len(losses),
        "first_loss": losses[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--conversations", dest="n", type=int, default=400)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--side", choices=["eosguard", "eosguard-padded", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--nproc", type=int, default=1, help="compare 1 process with N under torchrun (eosguard only)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    if a.smoke:
        a.steps, a.batch, a.n = 3, 4, 40
    if a.side:
        result = run_side(a.side, a.steps, a.batch, a.n)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return
    if a.nproc > 1:
        return processes(a)
    sides = {}
    for side in ("trl", "eosguard-padded", "eosguard"):
        cmd = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--steps",
            str(a.steps),
            "--batch",
            str(a.batch),
            "--conversations",
            str(a.n),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        sides[side] = json.loads(done.stdout.strip().splitlines()[-1])
    result = {
        "steps": a.steps,
        "examples_per_step": a.batch,
        "sides": sides,
        "ratios": {
            "trained_tokens_per_second": sides["eosguard"]["trained_tokens_per_second"]
            / sides["trl"]["trained_tokens_per_second"],
            "trained_tokens_per_second_ablation_padded_full_loss": sides["eosguard"]["trained_tokens_per_second"]
            / sides["eosguard-padded"]["trained_tokens_per_second"],
            "peak_rss": sides["eosguard"]["peak_rss_mb"] / sides["trl"]["peak_rss_mb"],
            "mean_loss": sides["eosguard"]["mean_loss"] / sides["trl"]["mean_loss"],
        },
        "goals": {"trained_tokens_per_second": ">= 1.3", "mean_loss": "~1 (same loss per token)"},
    }
    path = write_result("train" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"-> {path}")
    for k, v in result["ratios"].items():
        print(f"  {k}: {v:.2f}")
    for side, r in sides.items():
        print(
            f"  {side}: {r['trained_tokens_per_second']:.0f} trained tok/s, loss {r['mean_loss']:.3f} "
            f"(first {r['first_loss']:.3f}), {r['positions']} positions, peak {r['peak_rss_mb']:.0f} MB"
        )


def processes(a: argparse.Namespace) -> None:
    """eosguard's trainer in 1 process vs `a.nproc` processes (torchrun), the same global batch and steps."""
    if a.batch % a.nproc:
        raise SystemExit(f"--batch {a.batch} must split evenly over --nproc {a.nproc}")
    side = ["--side", "eosguard", "--steps", str(a.steps), "--conversations", str(a.n)]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.nproc)]
    runs = {
        "1 process": [sys.executable, __file__, *side, "--batch", str(a.batch)],
        f"{a.nproc} processes": [*launch, __file__, *side, "--batch", str(a.batch // a.nproc)],
    }
    sides = {}
    for name, cmd in runs.items():
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        sides[name] = json.loads(done.stdout.strip().splitlines()[-1])
    one, many = sides["1 process"], sides[f"{a.nproc} processes"]
    result = {
        "steps": a.steps,
        "global_batch": a.batch,
        "nproc": a.nproc,
        "sides": sides,
        "ratios": {
            "trained_tokens_per_second": many["trained_tokens_per_second"] / one["trained_tokens_per_second"],
            "mean_loss": many["mean_loss"] / one["mean_loss"],
        },
        "note": f"{os.cpu_count()} CPU cores shared by all processes (torchrun: 1 thread each); not a GPU figure",
    }
    path = write_result(f"train-nproc{a.nproc}" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"-> {path}")
    for name, r in sides.items():
        print(f"  {name}: {r['trained_tokens_per_second']:.0f} trained tok/s, loss {r['mean_loss']:.3f}")


if __name__ == "__main__":
    main()
