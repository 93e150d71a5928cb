"""Stopping measured in llama.cpp vs transformers: `eosguard eval --engine llamacpp` against `eosguard eval`
(transformers' batched `generate()`), whole commands as a user runs them, on the real demo's held-out prompts.

The model is SmolLM2-135M-Instruct: its safetensors folder (float32) for transformers, and the same folder exported
once by `eosguard export gguf` (f16, not timed) for llama.cpp; `--model` takes another folder (the demo's
`eosguard-demo/eosguard/model`). Both commands run greedy with the same token budget; the agreement of their stop
decisions, prompt by prompt, is reported beside the speed ratio (llama.cpp's f16 and transformers' float32 may
part on a near tie, so identity is not asserted; the goal is >= 95% agreement).

Run as:
    python benchmarks/bench_serve.py [--model FOLDER] [--repeats 3] [--smoke] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import best_of, write_result

from eosguard.recipes.demo import RealDemoSettings
from eosguard.recipes.tasks import split_tasks
from eosguard.serve.export import export_gguf
from eosguard.testing.fixtures import smollm2_model_dir


def eval_command(*args: str) -> dict:
    """`eosguard eval ... --json` in its own process; the report it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "eosguard", "eval", *args, "--json"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"eosguard eval {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="a model folder (default: SmolLM2-135M-Instruct as shipped)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    s = RealDemoSettings()
    n_eval, repeats = (8, 1) if a.smoke else (s.n_eval, a.repeats)
    folder = Path(a.model) if a.model else smollm2_model_dir()
    held = split_tasks(list(s.tasks), s.n_train, n_eval, seed=s.seed)[1]  # the demo's held-out prompts
    work = Path(tempfile.mkdtemp(prefix="eosguard-bench-serve-"))
    data = work / "heldout.jsonl"
    data.write_text("".join(json.dumps({"messages": c.as_dicts()}) + "\n" for c in held))
    gguf = export_gguf(folder, work / "model.gguf").path
    budget = ["--max-new-tokens", str(s.max_new_tokens), "--data", str(data)]

    t_hf, hf = best_of(lambda: eval_command("--model", str(folder), *budget), repeats)
    t_cpp, cpp = best_of(lambda: eval_command("--engine", "llamacpp", "--model", str(gguf), *budget), repeats)
    pairs = list(zip(hf["generations"], cpp["generations"], strict=True))
    agree = sum(x["stopped"] == y["stopped"] for x, y in pairs) / len(pairs)
    same_text = sum(x["output"] == y["output"] for x, y in pairs) / len(pairs)
    result = {
        "model": str(folder),
        "n_prompts": len(held),
        "max_new_tokens": s.max_new_tokens,
        "stop_rate": {"transformers": hf["stop_rate"], "llamacpp": cpp["stop_rate"]},
        "seconds": {"transformers": t_hf, "llamacpp": t_cpp},
        "generation_seconds": {"transformers": hf["seconds"], "llamacpp": cpp["seconds"]},
        "ratios": {"llamacpp_speedup": t_hf / t_cpp, "stop_agreement": agree, "same_text": same_text},
        "goals": {"llamacpp_speedup": ">= 3", "stop_agreement": ">= 0.95"},
        "repeats": repeats,
    }
    path = write_result("serve" + ("-smoke" if a.smoke else ""), result, a.out)
    r = result["ratios"]
    print(
        f"-> {path}\n  llama.cpp {t_cpp:.1f} s vs transformers {t_hf:.1f} s: {r['llamacpp_speedup']:.2f}x; "
        f"stop decisions agree on {agree:.0%}, same text on {same_text:.0%}"
    )


if __name__ == "__main__":
    main()
