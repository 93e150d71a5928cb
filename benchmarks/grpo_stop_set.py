"""GRPO's first step on the real SmolLM2-135M-Instruct, with a base model's stop set and with the template's: the share
of completions TRL judges unfinished (`completions/clipped_ratio`). Outside CI (minutes on 2 CPU cores).

Both runs use the same weights, the same tokenizer set up like a base model given a chat template (Qwen2.5 base: eos
and pad `<|endoftext|>`, the ChatML template closing replies with `<|im_end|>`) and the same seed; only the model's
generation config differs: `<|endoftext|>` alone (base-style) or `<|endoftext|>` and `<|im_end|>` (every stop token of
the template, what `eosguard fix` writes). TRL's GRPOTrainer finishes a completion on the generation config's eos ids
and the tokenizer's eos, never on what the template closes with. Each run is guarded (`guard_trainer(mode="warn")`)
so it goes on past the stop-set finding and the guard's own reading of the completions is printed beside TRL's.

Run as:
    python benchmarks/grpo_stop_set.py [--prompts 8] [--generations 4] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path

import datasets
import torch
import transformers
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

from eosguard.integrations import guard_trainer
from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import smollm2_model_dir


def base_style_copy(root: Path) -> Path:
    """SmolLM2-135M-Instruct's folder with the tokenizer's eos and pad set to `<|endoftext|>`, as a base model's."""
    folder = root / "smollm2-base-style"
    shutil.copytree(smollm2_model_dir(), folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(folder)
    return folder


def first_step(folder: Path, stops: list[int], args: argparse.Namespace, out: Path) -> dict:
    """One guarded GRPO step from `folder` with the generation config stopping on `stops`: TRL's and the guard's
    figures, and the time taken."""
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.generation_config.eos_token_id = stops
    prompts = [{"prompt": c.as_dicts()[:-1]} for c in make_conversations(["first", "last"], args.prompts, seed=3)]
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        max_completion_length=args.max_new_tokens,
        beta=0.0,
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        seed=0,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )

    def length(completions: list, **kwargs: object) -> list[float]:
        return [float(len(c[0]["content"])) for c in completions]

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=length,
        args=config,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=tok,
    )
    guard_trainer(trainer, mode="warn")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logged = next(h for h in trainer.state.log_history if "completions/clipped_ratio" in h)
    check = trainer._generate_and_score_completions.first
    return {
        "stop_ids": list(trainer.eos_token_ids),
        "clipped_ratio": logged["completions/clipped_ratio"],
        "mean_length": logged["completions/mean_length"],
        "past_stop_token": check.past_closer / check.completions,
        "completions": check.completions,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    logging.getLogger("eosguard").setLevel(logging.ERROR)  # the guard's warnings: its figures are printed below
    with tempfile.TemporaryDirectory() as tmp:
        folder = base_style_copy(Path(tmp))
        tok = AutoTokenizer.from_pretrained(folder)
        end, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
        runs = {
            "base-style (<|endoftext|>)": first_step(folder, [end], args, Path(tmp) / "base"),
            "template's (<|endoftext|>, <|im_end|>)": first_step(folder, [end, im_end], args, Path(tmp) / "fixed"),
        }
    print(
        f"SmolLM2-135M-Instruct, GRPO first step: {args.prompts} prompts x {args.generations} generations, "
        f"max_completion_length={args.max_new_tokens}; trl {trl.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    for name, r in runs.items():
        print(
            f"stop set {name}: ids {r['stop_ids']}; unfinished (clipped_ratio) {r['clipped_ratio']:.0%}, "
            f"mean length {r['mean_length']:.1f} tokens, ran past <|im_end|> {r['past_stop_token']:.0%} "
            f"of {r['completions']}; step {r['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
