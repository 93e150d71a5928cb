"""`eosguard doctor`: a pre-flight check that finds every way a setup loses the stop token.

It inspects a tokenizer (only its config and tokenizer files), optionally a model folder (config.json and
generation_config.json only; weights are never read), data, a max length and a collator, in numbered steps, and
reports findings with a fix each. `eos-masked` is proven by running the collator on real examples, never guessed.

Finding ids (stable; `--json` prints them): pad-is-eos, eos-masked, no-pad-token, padding-left, template-no-eos,
generation-eos-mismatch, new-token-untrained, vocab-mismatch, truncation-drops-eos, special-token-in-content,
double-bos, no-trainable-tokens, missing-chat-template, prompt-not-prefix.

Exit codes: 0 no finding of severity "error"; 1 at least one; 2 bad usage or unreadable input.

Run as:
    eosguard doctor --tokenizer PATH [--model PATH] [--data FILE] [--max-length N]
                    [--collator eosguard|transformers|trl|MODULE:FACTORY] [--lora] [--json] [--show N]
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eosguard.chatml import IM_END, IM_START, ChatMLRenderer, labels_from_mask
from eosguard.collate import PadCollator
from eosguard.conversations import Conversation, conversation
from eosguard.errors import EosguardError
from eosguard.guard import StopCheck, StopTokenChecker
from eosguard.tokenizer_setup import find_end_of_turn, prepare_tokenizer

Severity = Literal["error", "warning", "info"]


@dataclass
class Finding:
    id: str
    severity: Severity
    message: str
    fix: str
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "severity": self.severity, "message": self.message, "fix": self.fix}
        if self.count is not None:
            d["count"] = self.count
        return d


@dataclass
class Step:
    title: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    shown: list[list[tuple[str, int, int]]] = field(default_factory=list)  # (token, id, label) per example

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def add(self, *args: Any, **kwargs: Any) -> Finding:
        finding = Finding(*args, **kwargs)
        self.findings.append(finding)
        return finding

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.has_errors,
            "findings": [f.to_dict() for f in self.findings],
            "steps": [{"title": s.title, "ok": s.ok, "detail": s.detail} for s in self.steps],
            "facts": self.facts,
        }


PROBE_CONVERSATIONS: tuple[Conversation, ...] = (
    conversation(("system", "You are helpful."), ("user", "Name a colour."), ("assistant", "Blue.")),
    conversation(
        ("user", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "Count to three."),
        ("assistant", "One, two, three."),
    ),
    conversation(("user", "What is 2 + 2?"), ("assistant", "4")),
)

CollatorSpec = str  # "eosguard" | "transformers" | "trl" | "module:factory"


# -- steps ---------------------------------------------------------------------------------------------------


def _check_template(tok: Any, report: DoctorReport) -> tuple[str, int] | None:
    """Find the end-of-turn token from the template; never assume it."""
    if not getattr(tok, "chat_template", None):
        report.add(
            "missing-chat-template",
            "warning",
            "the tokenizer has no chat template: inference code cannot format prompts the way training did",
            "save the tokenizer with a chat template (eosguard.prepare_tokenizer sets ChatML)",
        )
        eot_id = tok.get_vocab().get(IM_END)
        report.steps.append(Step("chat template", False, f"none; assuming ChatML's {IM_END}" if eot_id else "none"))
        return (IM_END, eot_id) if eot_id is not None else None
    eot = find_end_of_turn(tok)
    if eot is None:
        report.add(
            "template-no-eos",
            "error",
            "the chat template writes no stop token after the assistant's content, so no example can teach the "
            "model to stop",
            "use a template that closes every assistant turn with the end-of-turn token (ChatML: <|im_end|>)",
        )
        report.steps.append(Step("chat template", False, "assistant turns are not closed by a control token"))
        return None
    if not _closes_every_turn(tok, eot[0]):
        report.add(
            "template-no-eos",
            "error",
            f"the chat template closes only the last assistant turn with {eot[0]}: earlier turns of multi-turn "
            "conversations teach the model to run on",
            "use a template that closes every assistant turn with the end-of-turn token",
        )
        report.steps.append(Step("chat template", False, f"earlier assistant turns are not closed by {eot[0]}"))
        return eot
    report.steps.append(Step("chat template", True, f"assistant turns end with {eot[0]} (id {eot[1]})"))
    return eot


def _closes_every_turn(tok: Any, eot: str) -> bool:
    """Render two assistant turns and check that the end-of-turn token follows each one's content."""
    probes = ["EOSGUARD_FIRST_ANSWER", "EOSGUARD_SECOND_ANSWER"]
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": probes[0]},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": probes[1]},
    ]
    try:
        text = tok.apply_chat_template(messages, tokenize=False)
    except Exception:
        return True  # the single-turn probe already passed; a template that rejects this shape is not judged here
    for probe in probes:
        at = text.find(probe)
        if at >= 0 and not text[at + len(probe) :].lstrip().startswith(eot):
            return False
    return True


def _check_prompt_prefix(tok: Any, convs: Sequence[Conversation], report: DoctorReport) -> None:
    """The generation prompt must be a token prefix of the training sequence, or inference sees other tokens."""
    if not getattr(tok, "chat_template", None):
        return
    bad = 0
    for conv in convs[:64]:
        msgs = conv.as_dicts()
        try:
            for k, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                prompt = tok.apply_chat_template(msgs[:k], add_generation_prompt=True, return_dict=False)
                full = tok.apply_chat_template(msgs[: k + 1], return_dict=False)
                if full[: len(prompt)] != prompt:
                    bad += 1
                    break
        except Exception:
            continue
    if bad:
        report.add(
            "prompt-not-prefix",
            "warning",
            f"in {bad} of {min(len(convs), 64)} conversations the template's generation prompt is not a token prefix "
            "of the training sequence: at inference the model sees tokens it was never trained to continue from",
            "make add_generation_prompt write exactly the assistant header the template writes before each reply "
            "(eosguard's ChatML renderer guarantees it)",
            count=bad,
        )


def _check_pad(tok: Any, eot_id: int | None, report: DoctorReport, training: bool = True) -> None:
    stop_ids = {i for i in (eot_id, tok.eos_token_id) if i is not None}
    ok = True
    if tok.pad_token is None:
        ok = False
        report.add(
            "no-pad-token",
            "warning",
            "the tokenizer has no pad token; trainers then fall back to pad = eos (TRL does it silently)",
            "set a pad token distinct from the end-of-turn token: an unused reserved token, unk, or a new <pad> "
            "(eosguard.prepare_tokenizer chooses and reports)",
        )
    elif tok.pad_token_id in stop_ids:
        ok = False
        report.add(
            "pad-is-eos",
            "warning",
            f"the pad token {tok.pad_token!r} (id {tok.pad_token_id}) is the eos / end-of-turn token: any collator "
            "that masks labels equal to the pad id erases every real stop-token label",
            "tokenizer.pad_token = tokenizer.unk_token, or add a dedicated pad token; or pad labels by position",
        )
    if training and tok.padding_side == "left":
        report.add(
            "padding-left",
            "warning",
            "padding_side is 'left' (as Mistral/OpenHermes ship it): fine for generation, but it hides pad tokens at "
            "the start of training rows, where a pad == eos masking bug is easy to miss",
            "pad on the right for training (eosguard's collator does) and on the left only for batched generation",
        )
    report.steps.append(
        Step("pad token", ok, f"{tok.pad_token!r} (id {tok.pad_token_id}), padding_side={tok.padding_side}")
    )


def _check_double_bos(tok: Any, features: list[dict[str, Any]], report: DoctorReport) -> None:
    """Proven on the features the pipeline really builds: rows that start with two BOS tokens."""
    bos = tok.bos_token_id
    n = sum(1 for f in features if bos is not None and list(f["input_ids"][:2]) == [bos, bos])
    if n:
        report.add(
            "double-bos",
            "warning",
            f"{n} of {len(features)} examples start with two {tok.bos_token!r} tokens: the chat template writes one "
            "and tokenizing the rendered text with special tokens adds another",
            "tokenize rendered chat text with add_special_tokens=False (apply_chat_template(tokenize=True) does), "
            "or render with eosguard",
            count=n,
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EosguardError(f"{path}: cannot read: {exc}") from None


def _as_ids(v: Any) -> list[int]:
    return [v] if isinstance(v, int) else [i for i in (v or []) if isinstance(i, int)]


def _check_model(model_path: str, tok: Any, eot: tuple[str, int] | None, lora: bool, report: DoctorReport) -> None:
    """Reads config.json and generation_config.json only (never the weights)."""
    folder = Path(model_path)
    if not folder.is_dir() or not (folder / "config.json").exists():
        raise EosguardError(f"{model_path}: not a model folder (no config.json)")
    config = _read_json(folder / "config.json")
    gen_path = folder / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.exists() else {}
    eos_ids = _as_ids(gen.get("eos_token_id", config.get("eos_token_id")))
    vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    report.facts.update({"model_eos_ids": eos_ids, "model_vocab_size": vocab})
    ok = True
    if eot is not None and eot[1] not in eos_ids:
        ok = False
        src = "generation_config.json" if "eos_token_id" in gen else "config.json"
        report.add(
            "generation-eos-mismatch",
            "error",
            f"{src} lists eos ids {eos_ids}, which do not include the end-of-turn token {eot[0]} (id {eot[1]}): "
            "generate() and vLLM will not stop even when the model emits it",
            f"set generation_config.eos_token_id = [{eot[1]}, ...] (eosguard train writes it)",
        )
    if vocab is not None and len(tok) > vocab:
        ok = False
        report.add(
            "vocab-mismatch",
            "error",
            f"the tokenizer has {len(tok)} tokens but the model's embeddings have {vocab} rows: ids beyond them crash "
            "or read garbage",
            f"model.resize_token_embeddings({len(tok)}) before training (eosguard train does)",
        )
    if eot is not None and vocab is not None and eot[1] >= _original_vocab(config, vocab) and lora:
        ok = False
        report.add(
            "new-token-untrained",
            "error",
            f"the end-of-turn token {eot[0]} (id {eot[1]}) was added after pre-training, and under LoRA its embedding "
            "and lm_head rows stay at their initial values: the model cannot learn to emit it",
            "train those rows: peft LoraConfig(modules_to_save=['embed_tokens', 'lm_head']) or "
            f"trainable_token_indices=[{eot[1]}] (eosguard train adds them automatically)",
        )
    report.steps.append(Step("model config", ok, f"eos ids {eos_ids}, vocab {vocab}"))


def _original_vocab(config: dict[str, Any], vocab: int) -> int:
    """The vocab size before tokens were added, when the folder records it (eosguard does), else the current one."""
    return int(config.get("eosguard_original_vocab_size", vocab))


def _check_data(
    convs: Sequence[Conversation], tok: Any, eot_id: int | None, max_length: int | None, report: DoctorReport
) -> None:
    specials = sorted({t for t in tok.get_added_vocab() if t.strip()} | set(tok.all_special_tokens), key=len)
    n_special = sum(any(s in m.content for m in c.messages for s in specials) for c in convs)
    if n_special:
        report.add(
            "special-token-in-content",
            "warning",
            f"{n_special} conversations contain special-token text (e.g. {IM_END}) in their content; a pipeline that "
            "tokenizes the rendered text parses it as control tokens and forges turn boundaries",
            "encode content as plain text (eosguard does) or clean the data",
            count=n_special,
        )
    if max_length is None:
        report.steps.append(Step("data", True, f"{len(convs)} conversations"))
        return
    texts = _rendered_texts(tok, convs)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    too_long = sum(len(ids) > max_length for ids in enc)
    drops_eos = sum(
        1
        for ids in enc
        if len(ids) > max_length
        and eot_id is not None
        and eot_id in ids
        and max(i for i, t in enumerate(ids) if t == eot_id) >= max_length
    )
    if drops_eos:
        report.add(
            "truncation-drops-eos",
            "warning",
            f"{drops_eos} of {len(convs)} examples are longer than max_length={max_length}; cut there, their last "
            "assistant turn loses its end-of-turn token",
            "raise max_length, or use eosguard's over_length policy (drop | truncate keeping the stop token | error)",
            count=drops_eos,
        )
    renderer_tok = tok if tok.get_vocab().get(IM_START) is not None else None
    no_target = 0
    if renderer_tok is not None:
        for r in ChatMLRenderer(renderer_tok).render_batch(convs):
            first = int(r.mask.argmax()) if r.mask.any() else len(r)
            no_target += int(first >= max_length)
    if no_target:
        report.add(
            "no-trainable-tokens",
            "error",
            f"{no_target} examples have no trained token within max_length={max_length} (the prompt alone fills it): "
            "they cost compute and teach nothing, and a batch of them gives a NaN loss",
            "raise max_length or drop them (eosguard's over_length policy drops and counts them)",
            count=no_target,
        )
    report.steps.append(
        Step("data", not (drops_eos or no_target), f"{len(convs)} conversations, {too_long} longer than {max_length}")
    )


def _rendered_texts(tok: Any, convs: Sequence[Conversation]) -> list[str]:
    """The user's pipeline text: the tokenizer's own template when it has one, else ChatML."""
    if getattr(tok, "chat_template", None):
        return [tok.apply_chat_template(c.as_dicts(), tokenize=False) for c in convs]
    return ["".join(f"{IM_START}{m.role}\n{m.content}{IM_END}\n" for m in c.messages) for c in convs]


# -- collator -------------------------------------------------------------------------------------------------


def _load_factory(spec: str) -> Callable[[Any], Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EosguardError(
            f"cannot load collator factory {spec!r}: {exc}", hint="use MODULE:FACTORY, e.g. mypkg.data:make_collator"
        ) from None


def build_collator(spec: CollatorSpec, tok: Any) -> tuple[Callable, Any, str]:
    """The collator to test, the tokenizer it runs with, and a note on fallbacks applied (like pad = eos)."""
    note = ""
    if spec == "eosguard":
        return PadCollator(pad_token_id=tok.pad_token_id, padding_side="right"), tok, note
    run_tok = tok
    if tok.pad_token is None:
        run_tok = copy.deepcopy(tok)
        run_tok.pad_token = run_tok.eos_token  # what TRL and most scripts do when there is no pad token
        note = " (with the usual fallback pad = eos, since the tokenizer has no pad token)"
    if spec == "transformers":
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(run_tok, mlm=False), run_tok, note
    if spec == "trl":
        try:
            from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as TRLCollator
        except ImportError:
            raise EosguardError("--collator trl needs TRL installed", hint="pip install 'eosguard[trl]'") from None
        return TRLCollator(pad_token_id=run_tok.pad_token_id), run_tok, note
    if ":" in spec:
        return _load_factory(spec)(run_tok), run_tok, note
    raise EosguardError(f"unknown collator {spec!r}", hint="use eosguard, transformers, trl or MODULE:FACTORY")


_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


def _features(spec: CollatorSpec, tok: Any, convs: Sequence[Conversation]) -> list[dict[str, Any]]:
    """The examples each pipeline really builds before its collator sees them."""
    if spec == "eosguard":
        return [r.to_example() for r in ChatMLRenderer(tok).render_batch(convs)]
    if spec == "trl" and _GENERATION_BLOCK.search(tok.chat_template or ""):
        # TRL's assistant_only_loss: labels are the template's {% generation %} mask, folded in before collation.
        out = tok.apply_chat_template(
            [c.as_dicts() for c in convs], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return [
            {"input_ids": ids, "labels": labels_from_mask(ids, mask)}
            for ids, mask in zip(out["input_ids"], out["assistant_masks"], strict=True)
        ]
    texts = _rendered_texts(tok, convs)
    enc = tok(texts)
    return [{"input_ids": ids} for ids in enc["input_ids"]]


def check_collator(
    spec: CollatorSpec, tok: Any, convs: Sequence[Conversation], report: DoctorReport, batch_size: int = 8
) -> tuple[StopCheck, str, list[dict[str, Any]]]:
    """Collate real examples with the collator and count supervised turns whose stop token is masked."""
    collator, run_tok, note = build_collator(spec, tok)
    checker = StopTokenChecker(run_tok)
    total = StopCheck()
    batches = []
    feats = _features(spec, run_tok, convs)
    if spec != "eosguard":
        _check_double_bos(run_tok, feats, report)
    for b in range(0, len(feats), batch_size):
        try:
            batch = collator(feats[b : b + batch_size])
        except Exception as exc:
            raise EosguardError(f"the collator {spec!r} failed on real examples: {exc}") from None
        total += checker.check_batch(batch)
        batches.append(batch)
    return total, note, batches


# -- entry point ----------------------------------------------------------------------------------------------


def diagnose(
    tokenizer: Any,
    *,
    model_path: str | None = None,
    conversations: Sequence[Conversation] | None = None,
    max_length: int | None = None,
    collator: CollatorSpec = "eosguard",
    lora: bool = False,
    show: int = 0,
) -> DoctorReport:
    """Run every check; returns a report (nothing printed). See the module doc for the finding ids.

    Example:
        >>> from eosguard.tokenizer_setup import openhermes_tokenizer
        >>> diagnose(openhermes_tokenizer(pad="eos"), collator="transformers").ids
        ['eos-masked', 'pad-is-eos', 'padding-left']
    """
    report = DoctorReport()
    report.steps.append(Step("tokenizer", True, f"{type(tokenizer).__name__}, {len(tokenizer)} tokens"))
    eot = _check_template(tokenizer, report)
    eot_id = eot[1] if eot else None
    report.facts.update(
        {
            "end_of_turn": eot[0] if eot else None,
            "end_of_turn_id": eot_id,
            "pad_token": tokenizer.pad_token,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token": tokenizer.eos_token,
            "padding_side": tokenizer.padding_side,
        }
    )
    _check_pad(tokenizer, eot_id, report)
    if model_path:
        _check_model(model_path, tokenizer, eot, lora, report)
    convs = list(conversations) if conversations else list(PROBE_CONVERSATIONS)
    if conversations:
        _check_data(convs, tokenizer, eot_id, max_length, report)
    if collator != "eosguard":  # eosguard renders prompts and examples with one renderer: a prefix by construction
        _check_prompt_prefix(tokenizer, convs, report)

    if eot is not None and eot[0] == IM_END:
        run_tok = tokenizer
        if collator == "eosguard":  # eosguard trains with a prepared copy: pad chosen, ChatML template set
            run_tok = copy.deepcopy(tokenizer)
            prepare_tokenizer(run_tok)
        check, note, batches = check_collator(collator, run_tok, convs[:64], report)
        report.facts["collator"] = {
            "name": collator,
            "supervised_turns": check.supervised_turns,
            "stop_trained": check.stop_trained,
            "stop_masked": check.stop_masked,
        }
        if check.stop_masked:
            report.add(
                "eos-masked",
                "error",
                f"collating {len(convs[:64])} real examples with the {collator!r} collator{note} leaves "
                f"{check.stop_masked} of {check.supervised_turns} assistant-closing {IM_END} tokens at label -100: "
                "the model never learns to stop",
                "make pad differ from the end-of-turn token (pad = unk, a reserved or a new <pad>), or pad labels by "
                "position (eosguard.PadCollator); wrap any collator with eosguard.guard to catch this in training",
                count=check.stop_masked,
            )
        report.steps.append(
            Step(
                f"collator {collator!r}",
                not check.stop_masked,
                f"{check.stop_trained}/{check.supervised_turns} stop tokens trained{note}",
            )
        )
        report.shown = _shown(run_tok, batches, show)
    elif eot is not None:
        report.steps.append(
            Step(f"collator {collator!r}", True, f"skipped: the template is not ChatML (ends turns with {eot[0]})")
        )
    order = {"error": 0, "warning": 1, "info": 2}
    report.findings.sort(key=lambda f: order[f.severity])
    return report


def _shown(tok: Any, batches: list[dict[str, Any]], n: int) -> list[list[tuple[str, int, int]]]:
    out: list[list[tuple[str, int, int]]] = []
    for batch in batches:
        mask = batch.get("attention_mask")
        for row in range(len(batch["input_ids"])):
            if len(out) >= n:
                return out
            ids = batch["input_ids"][row].tolist()
            labels = batch["labels"][row].tolist()
            keep = mask[row].tolist() if mask is not None else [1] * len(ids)
            out.append([(tok.convert_ids_to_tokens(i), i, y) for i, y, k in zip(ids, labels, keep, strict=True) if k])
    return out


__all__ = ["DoctorReport", "Finding", "check_collator", "diagnose"]
