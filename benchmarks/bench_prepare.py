"""Preprocessing throughput: eosguard's renderer vs TRL's SFTTrainer (assistant_only_loss) vs bare encode_batch.

All three tokenize the same seeded conversations with the same tokenizer and template; ratios come from one run.
The anchor is the tokenizer's own batch encoder on the already-rendered text (the floor for any pipeline).

Run as:
    python benchmarks/bench_prepare.py [--n 4000] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import CHATML_TRAINING_TEMPLATE, best_of, synthetic_conversations, write_result

from eosguard.fixtures import demo_tokenizer, tiny_mistral
from eosguard.render import ChatRenderer


def trl_prepare(tok, convs, max_length: int):
    """TRL 1.x's conversational preprocessing, as SFTTrainer runs it with assistant_only_loss=True."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    tok = copy.deepcopy(tok)
    tok.chat_template = CHATML_TRAINING_TEMPLATE
    model = tiny_mistral(
        len(tok),
        hidden=16,
        layers=1,
        heads=2,
        kv_heads=1,
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
    )
    args = SFTConfig(
        output_dir="/tmp/eosguard-bench-trl",
        assistant_only_loss=True,
        max_length=max_length,
        report_to=[],
        dataset_num_proc=None,
        packing=False,
        bf16=False,
        use_cpu=True,
    )
    rows = [{"messages": c.as_dicts()} for c in convs]
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows[:8]), processing_class=tok
    )
    ds = datasets.Dataset.from_list(rows)

    def run():
        return trainer._prepare_dataset(ds, tok, args, packing=False, formatting_func=None, dataset_name="bench")

    return run


def prepare_peak_rss_mb(n: int, tmp: Path) -> float:
    """Peak RSS of `eosguard prepare` on `n` conversations, in a fresh process (streaming keeps it flat)."""
    import json
    import subprocess

    data = tmp / f"chats-{n}.jsonl"
    with data.open("w") as f:
        for c in synthetic_conversations(n, seed=1):
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    tok_dir = tmp / "tokenizer"
    if not tok_dir.exists():
        demo_tokenizer().save_pretrained(tok_dir)
    code = (
        "import resource, sys; from eosguard.prepare import prepare_dataset; "
        f"prepare_dataset([{str(data)!r}], {str(tok_dir)!r}, {str(tmp / f'out-{n}')!r}); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    n, repeats = (200, 1) if a.smoke else (a.n, a.repeats)
    tok = demo_tokenizer()
    renderer = ChatRenderer(tok)
    convs = synthetic_conversations(n, seed=0)
    texts = [renderer.render_text(c.messages) for c in convs]
    backend = tok.backend_tokenizer

    t_anchor, enc = best_of(lambda: [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)], repeats)
    t_ours, ours = best_of(lambda: [r.to_example() for r in renderer.render_batch(convs)], repeats)
    t_trl, trl_ds = best_of(trl_prepare(tok, convs, max_length=100_000), 1 if a.smoke else 2)

    # Same ids everywhere (the anchor tokenizes the very text the template renders).
    assert [o["input_ids"] for o in ours] == enc
    assert [list(x) for x in trl_ds["input_ids"][:50]] == enc[:50]
    n_tokens = sum(len(e) for e in enc)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        small, large = (50, 500) if a.smoke else (2000, 20000)
        rss = {small: prepare_peak_rss_mb(small, Path(tmp)), large: prepare_peak_rss_mb(large, Path(tmp))}
    result = {
        "n_conversations": n,
        "n_tokens": n_tokens,
        "seconds": {"encode_batch": t_anchor, "eosguard": t_ours, "trl_sft": t_trl},
        "tokens_per_second": {
            "encode_batch": n_tokens / t_anchor,
            "eosguard": n_tokens / t_ours,
            "trl_sft": n_tokens / t_trl,
        },
        "prepare_peak_rss_mb": {str(k): v for k, v in rss.items()},
        "ratios": {
            "eosguard_speedup_vs_trl": t_trl / t_ours,
            "eosguard_time_vs_encode_batch": t_ours / t_anchor,
            "prepare_peak_rss_10x_data": rss[large] / rss[small],
        },
        "goals": {
            "eosguard_speedup_vs_trl": ">= 3",
            "eosguard_time_vs_encode_batch": "<= 1.5",
            "prepare_peak_rss_10x_data": "~1 (flat: streamed)",
        },
    }
    path = write_result("prepare" + ("-smoke" if a.smoke else ""), result, a.out)
    print(f"{n} conversations, {n_tokens} tokens -> {path}")
    for k, v in result["ratios"].items():
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
