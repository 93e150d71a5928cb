"""Stop-rate evaluation: batched generation with a KV cache vs one prompt at a time, same greedy outputs.

Uses the demo's stage-0 recipe (a tiny Mistral trained for a few seconds so that it answers and stops) and the
same held-out prompts for both ways; asserts identical outputs and reports the speed-up measured in this run.

Run as:
    python benchmarks/bench_eval.py [--n 128] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import best_of, write_result

from eosguard.chat.examples import build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.checks.evaluate import evaluate_stopping
from eosguard.recipes.demo import DemoSettings
from eosguard.recipes.tasks import split_tasks
from eosguard.testing.fixtures import demo_tokenizer, tiny_mistral
from eosguard.training.collate import PadCollator
from eosguard.training.trainer import fit, training_arguments


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    if a.smoke:
        a.n, a.train_steps = 8, 5
    tok = demo_tokenizer()
    renderer = ChatRenderer(tok)
    s = DemoSettings()
    model = tiny_mistral(
        len(tok),
        hidden=s.hidden,
        layers=s.layers,
        bos_id=tok.bos_token_id,
        eos_id=renderer.end_of_turn_id,
        pad_id=tok.pad_token_id,
    )
    train, heldout = split_tasks(["repeat", "first", "count"], 1000, a.n, seed=0)
    examples, _ = build_examples(train, renderer, max_length=128)
    fit(
        model,
        tok,
        examples,
        PadCollator(tok.pad_token_id),
        training_arguments("/tmp/eosguard-bench-eval", steps=a.train_steps, lr=3e-3, batch_size=16, progress=False),
    )

    def run(batch_size: int):  # the renderer is built once: both ways measure generation, not set-up
        return evaluate_stopping(
            model, tok, heldout, max_new_tokens=a.max_new_tokens, batch_size=batch_size, renderer=renderer
        )

    t_single, single = best_of(lambda: run(1), 1)
    t_batched, batched = best_of(lambda: run(64), 2)
    assert [g.output for g in single.generations] == [g.output for g in batched.generations]
    result = {
        "n_prompts": a.n,
        "max_new_tokens": a.max_new_tokens,
        "stop_rate": batched.stop_rate,
        "seconds": {"one_at_a_time": t_single, "batched_64": t_batched},
        "ratios": {"batched_speedup": t_single / t_batched},
        "goals": {"batched_speedup": ">= 4", "outputs": "identical greedy outputs (asserted)"},
    }
    path = write_result("eval" + ("-smoke" if a.smoke else ""), result, a.out)
    print(
        f"-> {path}\n  batched_speedup: {result['ratios']['batched_speedup']:.2f} (stop rate {batched.stop_rate:.0%})"
    )


if __name__ == "__main__":
    main()
