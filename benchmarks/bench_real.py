"""Training on a real model: SmolLM2-135M-Instruct, one epoch, `eosguard train` vs TRL's SFTTrainer, same precision.

The same seeded multi-turn conversations (system prompt, 1-3 exchanges), max_length 512, 4 rows per step, constant
lr, seed 0. TRL: padded batches, `assistant_only_loss=True` (ChatML with `{% generation %}` blocks, the same text as
SmolLM2's own template renders), its default collator. eosguard: what `eosguard train` runs (`train_from_config`:
data, doctor, model, packed rows, guarded collator, Trainer, save), twice: `packing: rows` (all examples packed into
rows before batching: fewer optimizer steps than TRL) and `packing: batch` (each step packs the same 4 examples TRL's
step pads: the same steps, so its loss compares like for like). Each side runs in its own process, so its peak RSS
is its own. Reported per side: training seconds (the Trainer's epoch) and whole-process seconds, trained tokens per
second, mean logged loss, the loss per trained token on 16 held-out conversations after the epoch (fp32, the same
labels for both), peak RSS, and where the training time goes (the decoder's forward, the output projection's, the
optimizer's step; the rest is mostly backward; see `Profile`). `--precision fp32 --precision bf16` measures both;
`--repeats N` runs every side N times, interleaved, and reports the median run and the median of the ratios.

Run as:
    python benchmarks/bench_real.py [--precision bf16] [--repeats 3] [--conversations 48] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import CHATML_TRAINING_TEMPLATE, counting_collator, synthetic_conversations, trl_anchor_config, write_result

MAX_LENGTH = 512
BATCH = 4
LR = 1e-4


class Profile:
    """Wall time inside the decoder's and the projection's forward calls and the optimizer's step.

    TRL's projection is timed by hooks on the output layer. eosguard's is the forward of `LinearCrossEntropy`
    (projection and log-sum-exp of the labelled positions): a hook on its head would send the loss down the
    checkpointed path that a hooked head takes, and time that instead of what runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}

    def _timed(self, name: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed

    def attach(self, model: Any, *, fused_loss: bool = False) -> None:
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        hooked = [("decoder forward", base.get_decoder())]
        if fused_loss:
            from eosguard.training.loss import LinearCrossEntropy

            LinearCrossEntropy.apply = self._timed("projection", LinearCrossEntropy.apply)
        else:
            hooked.append(("projection", base.get_output_embeddings()))
        for name, module in hooked:
            module.register_forward_pre_hook(lambda *_a, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda *_a, n=name: self._stop(n))
        torch.optim.AdamW.step = self._timed("optimizer", torch.optim.AdamW.step)

    def _stop(self, name: str) -> None:
        import torch

        if torch.cuda.is_available():  # kernels run asynchronously: wait for them, or only launches are timed
            torch.cuda.synchronize()
        self.seconds[name] += time.perf_counter() - self._start.pop(name)

    def shares(self, total: float) -> dict[str, float]:
        out = {k: round(v / total, 3) for k, v in self.seconds.items()}
        out["backward and the rest"] = round(1 - sum(out.values()), 3)
        return out


def _write_jsonl(convs: list, path: Path) -> Path:
    with path.open("w") as f:
        for c in convs:
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    return path


def heldout_loss(model: Any, source: str, n: int) -> float:
    """Mean loss per trained token of a trained model on `n` held-out conversations, fp32, labels from eosguard's
    renderer for both sides: the like-for-like check that neither side trained less or differently."""
    import torch

    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.render import ChatRenderer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.training.collate import PadCollator
    from eosguard.training.loss import causal_lm_loss

    tok = load_tokenizer(source)
    prepare_tokenizer(tok)
    rendered = ChatRenderer(tok).examples(synthetic_conversations(n, seed=1, max_words=120))
    batch = PadCollator(tok.pad_token_id)([r.to_example() for r in rendered])
    model.eval()
    with torch.no_grad():
        return float(causal_lm_loss(model.float(), {k: v.to(model.device) for k, v in batch.items()}))


HELDOUT = 16  # held-out chats for the loss after training (fewer when fewer are trained: the --smoke run)
SIDES = {"trl": None, "eosguard": "rows", "eosguard-batch": "batch"}  # side -> eosguard's `packing`


def run_side(side: str, precision: str, n: int) -> dict[str, Any]:
    import torch

    from eosguard.testing.fixtures import smollm2_model_dir

    process_start = time.perf_counter()
    source = str(smollm2_model_dir())
    convs = synthetic_conversations(n, seed=0, max_words=120)
    profile = Profile()
    counted = {"trained": 0, "positions": 0}

    if side == "trl":
        import datasets
        from transformers import AutoModelForCausalLM
        from trl import SFTTrainer

        from eosguard.base.loading import load_tokenizer

        tok = load_tokenizer(source)
        tok.chat_template = CHATML_TRAINING_TEMPLATE
        tok.pad_token = "<|endoftext|>"  # not the end-of-turn: TRL pads labels with -100 anyway
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        args = trl_anchor_config(
            tempfile.mkdtemp(),
            batch=BATCH,
            lr=LR,
            scheduler="constant",
            max_length=MAX_LENGTH,
            num_train_epochs=1,
            bf16=precision == "bf16",
        )
        ds = datasets.Dataset.from_list([{"messages": c.as_dicts()} for c in convs])
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        trainer.data_collator = counting_collator(trainer.data_collator, counted)
        profile.attach(model)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        steps = trainer.state.global_step
        after = heldout_loss(trainer.model, source, min(n, HELDOUT))
    else:
        import eosguard.recipes.train as train_module
        from eosguard.recipes.config import TrainConfig

        tmp = Path(tempfile.mkdtemp())
        cfg = TrainConfig(
            model=source,
            data={"train": [str(_write_jsonl(convs, tmp / "train.jsonl"))]},
            output_dir=str(tmp / "out"),
            max_length=MAX_LENGTH,
            epochs=1,
            lr=LR,
            scheduler="constant_with_warmup",
            batch_size=BATCH,
            precision=precision,
            packing=SIDES[side],
            seed=0,
        )
        build_model, rows_and_collator = train_module.build_model, train_module.rows_and_collator

        def profiled_model(*a: Any, **k: Any) -> Any:
            model = build_model(*a, **k)
            profile.attach(model, fused_loss=True)
            return model

        def counted_rows(*a: Any, **k: Any) -> Any:
            rows, collate = rows_and_collator(*a, **k)
            return rows, counting_collator(collate, counted)

        train_module.build_model, train_module.rows_and_collator = profiled_model, counted_rows
        summary = train_module.train_from_config(cfg, log=lambda _line: None)
        seconds = summary["train"]["seconds"]
        losses = [loss for _, loss in summary["train"]["losses"]]
        steps = summary["train"]["steps"]
        after = heldout_loss(train_module.load_model(str(tmp / "out" / "model")), source, min(n, HELDOUT))
    return {
        "train_seconds": seconds,
        "process_seconds": time.perf_counter() - process_start,
        "steps": steps,
        "trained_tokens": counted["trained"],
        "positions": counted["positions"],
        "trained_tokens_per_second": counted["trained"] / seconds,
        "mean_loss": sum(losses) / len(losses),
        "heldout_loss_after": after,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "time_shares": profile.shares(seconds),
    }


def _run_side(side: str, precision: str, n: int) -> dict[str, Any]:
    """One side in a process of its own (its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--side", side, "--precision", precision, "--conversations", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} ({precision}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median epoch time, with every run's epoch time beside it."""
    chosen = sorted(runs, key=lambda r: r["train_seconds"])[(len(runs) - 1) // 2]
    return {**chosen, "train_seconds_runs": [r["train_seconds"] for r in runs]}


def _per_repeat(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    """a[key] / b[key] of each repeat, each ratio taken within one repeat."""
    return [x[key] / y[key] for x, y in zip(a, b, strict=True)]


def _ratio(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    """The median over the repeats of `_per_repeat`."""
    return statistics.median(_per_repeat(a, b, key))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--precision", action="append", choices=["fp32", "bf16"], help="repeatable; default bf16")
    p.add_argument("--conversations", dest="n", type=int, default=48)
    p.add_argument("--repeats", type=int, default=1, help="runs of every side, interleaved; medians reported")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    precisions = a.precision or ["bf16"]
    if a.smoke:
        a.n = 4  # one step a side
    if a.side:
        print(json.dumps(run_side(a.side, precisions[0], a.n)))
        return
    result: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct",
        "conversations": a.n,
        "max_length": MAX_LENGTH,
        "repeats": a.repeats,
    }
    # Repeat r runs every side at every precision before repeat r + 1 starts: a slow spell of a shared machine falls
    # on both precisions and all sides alike, and each ratio below is taken within one repeat, then the median.
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {pr: {side: [] for side in SIDES} for pr in precisions}
    for _ in range(a.repeats):
        for precision in precisions:
            for side in SIDES:
                runs[precision][side].append(_run_side(side, precision, a.n))

    for precision in precisions:
        got = runs[precision]
        result[precision] = {
            "sides": {side: _median_run(got[side]) for side in SIDES},
            "ratios": {
                "epoch_speed": _ratio(got["trl"], got["eosguard"], "train_seconds"),
                "trained_tokens_per_second": _ratio(got["eosguard"], got["trl"], "trained_tokens_per_second"),
                "mean_loss": _ratio(got["eosguard"], got["trl"], "mean_loss"),
                "heldout_loss_after": _ratio(got["eosguard"], got["trl"], "heldout_loss_after"),
                "peak_rss": _ratio(got["eosguard"], got["trl"], "peak_rss_mb"),
                "equal_steps_epoch_speed": _ratio(got["trl"], got["eosguard-batch"], "train_seconds"),
                "equal_steps_heldout_loss_after": _ratio(got["eosguard-batch"], got["trl"], "heldout_loss_after"),
            },
        }
    if "fp32" in runs and "bf16" in runs:
        result["bf16_over_fp32"] = {
            side: _ratio(runs["fp32"][side], runs["bf16"][side], "train_seconds") for side in SIDES
        }
        result["bf16_over_fp32_runs"] = {
            side: _per_repeat(runs["fp32"][side], runs["bf16"][side], "train_seconds") for side in SIDES
        }
    result["goals"] = {"epoch_speed": ">= 1.5 (same precision)", "bf16_over_fp32 (eosguard)": ">= 1.8"}
    path = write_result("real" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"-> {path}")
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
