"""Attention for packed rows on this machine: which implementation `eosguard train` should use, measured.

The same 16 sequences of SmolLM2-135M-Instruct (lengths of real rendered multi-turn chats, 87-254 tokens), forward +
backward under bf16 autocast, best of 3:
- packed-sdpa: eosguard's own packing (best-fit rows of <= 512 tokens, one row each, position_ids restarting per
  sequence); transformers builds the block-diagonal mask for SDPA (what eosguard runs on CPU);
- packed-eager: the same rows through the eager attention;
- packed-flex: the same rows through flex_attention (recorded as unavailable when torch cannot run it);
- grouped-padding: no packing, the sequences sorted by length into 4 padded batches of 4 (length-grouped padding);
- causal-bound: the packed rows with plain causal attention and no mask (wrong across sequences: a lower bound).

Run as:
    python benchmarks/bench_attention.py [--out benchmarks/results] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result

LENGTHS = [87, 105, 111, 120, 138, 159, 161, 181, 183, 187, 214, 220, 221, 234, 249, 254]
ROW = 512


def batches(kind: str, lengths: list[int]) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(0)
    if kind == "grouped-padding":
        order = sorted(lengths)
        out = []
        for i in range(0, len(order), 4):
            group = order[i : i + 4]
            width = max(group)
            ids = torch.randint(10, 49000, (len(group), width), generator=g)
            mask = torch.tensor([[1] * n + [0] * (width - n) for n in group])
            out.append({"input_ids": ids, "attention_mask": mask})
        return out
    from eosguard.training.collate import PackedCollator
    from eosguard.training.packing import pack_examples

    examples = []
    for n in lengths:
        ids = torch.randint(10, 49000, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": ids})
    batch = PackedCollator(one_row=False)(pack_examples(examples, ROW))  # what eosguard train builds for SDPA
    batch.pop("labels")
    if kind == "causal-bound":
        batch.pop("position_ids")
    return [batch]


def measure(kind: str, repeats: int, lengths: list[int]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from eosguard.testing.fixtures import smollm2_model_dir

    impl = {"packed-eager": "eager", "packed-flex": "flex_attention"}.get(kind, "sdpa")
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_model_dir()), attn_implementation=impl)
    model.config.use_cache = False
    work = batches(kind, lengths)
    best = float("inf")
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in work:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    hidden = model.model(**batch).last_hidden_state
                hidden.float().pow(2).mean().backward()
                model.zero_grad()
            best = min(best, time.perf_counter() - start)
    except (NotImplementedError, RuntimeError) as exc:
        return {"available": False, "why": str(exc).splitlines()[0][:200]}
    positions = sum(int(b["input_ids"].numel()) for b in work)
    return {"available": True, "seconds": round(best, 3), "positions": positions}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    kinds = ["packed-sdpa", "causal-bound", "grouped-padding", "packed-eager", "packed-flex"]
    lengths = LENGTHS[:4] if a.smoke else LENGTHS  # smoke: the script works, on 4 chats
    results = {kind: measure(kind, 1 if a.smoke else 3, lengths) for kind in kinds}
    ran = {k: v for k, v in results.items() if v["available"] and k != "causal-bound"}
    fastest = min(ran, key=lambda k: ran[k]["seconds"])
    anchor = results["packed-sdpa"]["seconds"]
    result = {
        "sides": results,
        "fastest_correct": fastest,
        "ratios": {k: round(v["seconds"] / anchor, 3) for k, v in results.items() if v["available"]},
        "note": "ratios are seconds relative to packed-sdpa (lower is faster); causal-bound is not a correct option",
    }
    path = write_result("attention" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"-> {path}")
    for k, v in results.items():
        print(f"  {k}: {v}")
    print(f"  fastest correct option: {fastest}")


if __name__ == "__main__":
    main()
