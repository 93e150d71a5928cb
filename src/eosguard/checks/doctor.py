"""`eosguard doctor`: a pre-flight check that finds every way a setup loses the stop token, on any chat template.

It inspects a tokenizer (its tokenizer files), optionally a model folder (config.json, generation_config.json, and
the stop tokens' own embedding and output rows, read alone from the weights: `eosguard.checks.weights`), data, a max
length and a collator, in numbered steps, and reports findings (declared in `eosguard.checks.findings`) with a fix
each. The template is read once (`ChatTemplate`) and handed to every step, with one renderer over it. The end-of-turn
token is read off the chat template, never assumed; `eos-masked` is proven by running the collator on real examples,
never guessed. A check that could not run is reported as skipped, never as passed.

Exit codes: 0 no finding of severity "error"; 1 at least one; 2 bad usage or unreadable input.

Why one module of ~500 lines: the steps are short functions that read top to bottom in the order they run, each
adding findings by id to one report; splitting them across modules would scatter that order without sharing code.

Run as:
    eosguard doctor --tokenizer PATH [--model PATH] [--data FILE] [--max-length N]
                    [--collator eosguard|transformers|trl|MODULE:FACTORY] [--lora] [--json] [--show N]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.chat.render import ChatRenderer
from eosguard.chat.template_args import with_arguments
from eosguard.chat.templates import KIND_NAMES, ChatTemplate, TemplateError, template_for
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.guard import StopCheck, StopTokenChecker
from eosguard.checks.pipelines import CollatorSpec, build_collator, features, offered_tools
from eosguard.checks.report import DoctorReport
from eosguard.checks.rl_stops import doctor_note, fixed_stop_ids, rl_stop_ids
from eosguard.checks.tokenview import TokenView, token_views
from eosguard.data.conversations import Conversation, conversation
from eosguard.data.preferences import Preference

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


def probe_conversations(chat: ChatTemplate) -> tuple[Conversation, ...]:
    """The probe conversations this template accepts: without their system turn where it rejects one (Gemma's first
    template, Mistral v0.1's strict alternation), since a template that has no system turn is not wrong."""
    try:
        chat.render(PROBE_CONVERSATIONS[0].as_dicts())
        return PROBE_CONVERSATIONS
    except TemplateError:
        return tuple(
            conversation(*((m.role, m.content) for m in c.messages if m.role != "system")) for c in PROBE_CONVERSATIONS
        )


# -- steps ---------------------------------------------------------------------------------------------------


def _read_template(tok: Any, stops: list[int] | None, report: DoctorReport) -> ChatTemplate | None:
    """Read the stop tokens off the template, once for the whole run; never assume them (stops: the model's
    generation config's eos ids, when a model folder is given: what decides whether the next turn's token closes a
    reply). None, with the template step failed or skipped, where no reply can be closed."""
    has_template = bool(getattr(tok, "chat_template", None))
    if not has_template:
        report.add(
            "missing-chat-template",
            "the tokenizer has no chat template: inference code cannot format prompts the way training did",
        )
    try:
        chat = template_for(tok, stops=stops)
    except TemplateError as exc:
        if has_template:
            report.add(exc.finding, f"the chat template cannot be split into messages: {exc.message}").advice = exc.hint
        report.step("chat template", False if has_template else None, exc.message)
        return None
    if chat.problem is not None:
        report.add("template-no-eos", f"{chat.problem}, so no example can teach the model to stop")
        report.step("chat template", False, "assistant turns are not closed by a token the model stops on")
        return None
    return chat


def _template_step(renderer: ChatRenderer, report: DoctorReport) -> list[list[Any]] | None:
    """The template step: what closes each kind of reply, and the probe conversations placed (every reply of a
    multi-turn conversation must be); returns their renderings, for the steps that read them (None: not placed)."""
    chat = renderer.template
    has_template = bool(getattr(chat.tokenizer, "chat_template", None))
    assumed = "" if has_template else " (no template: assuming ChatML, whose tokens it has)"
    if chat.assumed:
        tokens = " and ".join(dict.fromkeys(chat.assumed.values()))
        assumed += (
            f"; assumed: the model stops on {tokens}, the next turn's token (the template closes no turn with a token "
            "of its own, as GLM's; --model checks the model's generation config)"
        )
    kinds = "; ".join(
        f"{KIND_NAMES[kind]} end with {''.join(c.sequence)}" + (" (the next turn's token)" if c.appended else "")
        for kind, c in chat.closers.items()
    )
    probes = probe_conversations(chat)
    if probes is not PROBE_CONVERSATIONS:
        assumed += "; the template takes no system turn (probed without one)"
    try:
        rendered = renderer.render_batch(probes)
    except TemplateError as exc:
        report.add(exc.finding, exc.message).advice = exc.hint
        report.step("chat template", False, f"{kinds}; but {exc.message}")
        return None
    arguments = f"; template arguments {chat.args}" if chat.args else ""
    report.step("chat template", has_template, f"{kinds}{assumed}{arguments}")
    return rendered


def read_trained_template(tok: Any, whose: str, report: DoctorReport) -> ChatTemplate | None:
    """The template a served file is held to, read; where it cannot close a reply, its finding and a failed step,
    and None (the GGUF and Modelfile doctors)."""
    try:
        chat = ChatTemplate(tok)
        chat.require_end_of_turn()
    except TemplateError as exc:
        report.add(exc.finding, f"{whose} chat template: {exc.message}").advice = exc.hint
        report.step("chat template", False, exc.message)
        return None
    return chat


def _check_prompt_prefix(tok: Any, convs: Sequence[Conversation], tools: Any, report: DoctorReport) -> None:
    """The user's pipeline: the generation prompt must be a token prefix of the training sequence."""
    if not getattr(tok, "chat_template", None):
        return
    bad = rejected = 0
    for conv in convs[:64]:
        msgs = conv.as_dicts()
        offered = offered_tools(conv, tools)
        try:
            for k, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                prompt = tok.apply_chat_template(msgs[:k], tools=offered, add_generation_prompt=True, return_dict=False)
                full = tok.apply_chat_template(msgs[: k + 1], tools=offered, return_dict=False)
                if full[: len(prompt)] != prompt:
                    bad += 1
                    break
        except Exception:  # the template raised: counted and reported, never skipped silently
            rejected += 1
    checked = min(len(convs), 64)
    if rejected:
        report.add(
            "template-unsupported",
            f"the chat template raises an error on {rejected} of {checked} conversations",
            count=rejected,
        )
    if bad:
        report.add(
            "prompt-not-prefix",
            f"in {bad} of {checked} conversations the template's generation prompt is not a token prefix of the "
            "training sequence: at inference the model sees tokens it was never trained to continue from",
            count=bad,
        )


def _check_pad(tok: Any, chat: ChatTemplate | None, report: DoctorReport, *, rows: bool = False) -> None:
    """rows: prepared rows are audited, their labels read as written (or as the named collator builds them), so a
    pad that equals a stop token is proven harmless or harmful there, not warned about here."""
    if rows:
        pad = f"{tok.pad_token!r} (id {tok.pad_token_id})" if tok.pad_token is not None else (
            f"none (TRL's trainers set pad = eos {tok.eos_token!r} and save it with the model: harmless to masks built "
            "by position, the seed's bug for a later SFT stage with a collator that masks the pad id)"
        )  # fmt: skip
        report.step(
            "pad token",
            True,
            f"{pad}: the rows' labels (preference rows: the completions TRL's collator marks by position) are read "
            "directly",
        )
        return
    stop_ids = {i for i in (*(chat.stop_ids if chat else ()), tok.eos_token_id) if i is not None}
    ok = True
    if tok.pad_token is None:
        ok = False
        report.add(
            "no-pad-token", "the tokenizer has no pad token; trainers then fall back to pad = eos (TRL silently)"
        )
    elif tok.pad_token_id in stop_ids:
        ok = False
        report.add(
            "pad-is-eos",
            f"the pad token {tok.pad_token!r} (id {tok.pad_token_id}) is the eos or a stop token of the template: any "
            "collator that masks labels equal to the pad id erases every real stop-token label",
        )
    if tok.padding_side == "left":
        report.add(
            "padding-left",
            "padding_side is 'left' (as Mistral/OpenHermes ship it): fine for generation, but it hides pad tokens at "
            "the start of training rows, where a pad == eos masking bug is easy to miss",
        )
    report.step("pad token", ok, f"{tok.pad_token!r} (id {tok.pad_token_id}), padding_side={tok.padding_side}")


def _check_double_bos(tok: Any, features: list[dict[str, Any]], report: DoctorReport) -> None:
    """Proven on the features the pipeline really builds: rows that start with two BOS tokens."""
    bos = tok.bos_token_id
    n = sum(1 for f in features if bos is not None and list(f["input_ids"][:2]) == [bos, bos])
    if n:
        report.add(
            "double-bos",
            f"{n} of {len(features)} examples start with two {tok.bos_token!r} tokens: the chat template writes one "
            "and tokenizing the rendered text with special tokens adds another",
            count=n,
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EosguardError(f"{path}: cannot read: {exc}") from None


def _as_ids(v: Any) -> list[int]:
    return [v] if isinstance(v, int) else [i for i in (v or []) if isinstance(i, int)]


class ModelFiles:
    """A model folder's config.json and generation_config.json, read once; for a PEFT adapter folder, its base's
    when the base is a local folder (`adapter`, `base`). The weights are not read here (`eosguard.checks.weights`
    reads the stop tokens' rows alone)."""

    def __init__(self, model_path: str) -> None:
        folder = Path(model_path)
        adapter = folder / "adapter_config.json"
        self.folder, self.base = folder, None
        self.adapter: dict[str, Any] | None = _read_json(adapter) if adapter.exists() else None  # PEFT's config
        if self.adapter is not None:
            base = self.adapter.get("base_model_name_or_path")
            self.base = Path(base) if base and Path(base).is_dir() else None
            folder = self.base if self.base is not None and not (folder / "config.json").exists() else folder
        if not folder.is_dir() or not (folder / "config.json").exists():
            if self.adapter is not None:
                raise EosguardError(
                    f"{model_path}: an adapter whose base model is not a local folder (give --model the base)"
                )
            raise EosguardError(f"{model_path}: not a model folder (no config.json)")
        self.config = _read_json(folder / "config.json")
        gen_path = folder / "generation_config.json"
        self.generation = _read_json(gen_path) if gen_path.exists() else {}
        self.eos_source = "generation_config.json" if "eos_token_id" in self.generation else "config.json"
        self.eos_ids = _as_ids(self.generation.get("eos_token_id", self.config.get("eos_token_id")))


def _check_model(model: ModelFiles, tok: Any, chat: ChatTemplate | None, lora: bool, report: DoctorReport) -> None:
    """The model's own config against the template's stop tokens and the tokenizer."""
    config, eos_ids = model.config, model.eos_ids
    vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    rl_ids = rl_stop_ids(eos_ids, tok.eos_token_id)  # what TRL's GRPOTrainer / RLOOTrainer finish a completion on
    report.facts.update({"model_eos_ids": eos_ids, "model_vocab_size": vocab, "rl_stop_ids": rl_ids})
    stops = list(zip(chat.stop_tokens, chat.stop_ids, strict=True)) if chat is not None else []
    ok = True
    missing = [(t, i) for t, i in stops if i not in eos_ids]
    if missing and chat is not None:
        ok = False
        src = model.eos_source
        names = ", ".join(f"{t} (id {i})" for t, i in missing)
        report.add(
            "generation-eos-mismatch",
            f"{src} lists eos ids {eos_ids}, which do not include the template's stop token(s) {names}: "
            "generate() stops on these ids alone and runs on when the model emits them"
            + doctor_note(chat, eos_ids, tok),
        ).advice = f'generation_config.json: "eos_token_id": {fixed_stop_ids(chat, eos_ids)} (`eosguard fix` writes it)'
    if vocab is not None and len(tok) > vocab:
        ok = False
        report.add(
            "vocab-mismatch",
            f"the tokenizer has {len(tok)} tokens but the model's embeddings have {vocab} rows: ids beyond them crash "
            "or read garbage",
        )
    original = int(config.get("eosguard_original_vocab_size", vocab)) if vocab is not None else None
    new = [f"{t} (id {i})" for t, i in stops if original is not None and i >= original]
    if new and lora:
        ok = False
        report.add(
            "new-token-untrained",
            f"the stop token(s) {', '.join(new)} were added after pre-training, and under LoRA their embedding "
            "and lm_head rows stay at their initial values: the model cannot learn to emit them",
        )
    report.step("model config", ok, f"eos ids {eos_ids}, vocab {vocab}; GRPO / RLOO finish on {rl_ids}")
    if chat is not None:
        from eosguard.checks.weights import check_stop_rows

        check_stop_rows(model.folder, model.base, model.adapter, model.config, chat, report)


def _check_data(
    convs: Sequence[Conversation],
    tok: Any,
    renderer: ChatRenderer | None,
    max_length: int | None,
    collator: CollatorSpec,
    report: DoctorReport,
) -> None:
    specials = sorted({t for t in tok.get_added_vocab() if t.strip()} | set(tok.all_special_tokens), key=len)
    n_special = sum(any(s in m.content for m in c.messages for s in specials) for c in convs)
    if n_special:
        report.add(
            "special-token-in-content",
            f"{n_special} conversations contain special-token text in their content; a pipeline that tokenizes the "
            "rendered text parses it as control tokens and forges turn boundaries",
            count=n_special,
        )
    if renderer is None:
        report.step("data", True, f"{len(convs)} conversations")
        return
    chat = renderer.template
    try:
        rendered = renderer.render_batch(convs)
    except TemplateError as exc:
        report.add(exc.finding, exc.message).advice = exc.hint
        report.step("data", False, f"{len(convs)} conversations; the template cannot be split: {exc.message}")
        return
    examples = [r for rs in rendered for r in rs]
    detail = f"{len(convs)} conversations -> {len(examples)} examples"
    ok = _check_replies(rendered, chat, collator, report)
    rewritten = sum(r.own and not r.treated for r in examples)
    if rewritten and collator == "eosguard":
        detail += f" ({rewritten} replies trained in examples of their own: the template rewrites them in history)"
    if max_length is None:
        report.step("data", ok, detail)
        return
    stops = set(chat.stop_ids)
    too_long = [r for r in examples if len(r) > max_length]
    drops_eos = sum(1 for r in too_long if stops & set(r.input_ids.tolist()[max_length:]))
    if drops_eos and collator != "eosguard":
        report.add(
            "truncation-drops-eos",
            f"{drops_eos} of {len(examples)} examples are longer than max_length={max_length}; cut there, their last "
            "assistant turn loses its end-of-turn token",
            count=drops_eos,
        )
    no_target = sum(1 for r in examples if not r.mask[:max_length].any())
    if no_target:
        report.add(
            "no-trainable-tokens",
            f"{no_target} examples have no trained token within max_length={max_length} (the prompt alone fills it): "
            "they cost compute and teach nothing, and a batch of them gives a NaN loss",
            count=no_target,
        )
    detail += f", {len(too_long)} longer than {max_length}"
    if too_long and collator == "eosguard":
        detail += " (eosguard's over-length policy keeps the stop token of each one it keeps)"
    report.step("data", ok and not ((drops_eos and collator != "eosguard") or no_target), detail)


def _check_replies(
    rendered: Sequence[Sequence[Any]], chat: ChatTemplate, collator: CollatorSpec, report: DoctorReport
) -> bool:
    """Replies a whole-conversation pipeline trains in a form the model never produces: rewritten in history
    (every collator but eosguard's, which trains them apart), or after a reasoning block the prompt opens. A
    rewriting that changes the reply's closing token (gpt-oss: `<|return|>` becomes `<|end|>`) is an error: that
    pipeline trains a token the model does not stop on; one that keeps it (Qwen3 drops reasoning) a warning."""
    examples = [r for rs in rendered for r in rs]
    rewritten = [r for r in examples if r.own and not r.treated]
    closes_apart = {c.id for c in chat.closers.values() if not c.in_history}
    changed = [r for r in rewritten if r.closings and int(r.input_ids[r.closings[-1][1]]) in closes_apart]
    treated = sum(r.treated for r in examples)
    if rewritten and collator != "eosguard":
        if changed:
            tokens = ", ".join(c.token for c in chat.closers.values() if not c.in_history)
            report.add(
                "stop-rewritten",
                f"{len(changed)} replies end with {tokens} as a last reply, but the chat template closes them with "
                "another token once later turns follow: trained inside the whole conversation, they teach a closing "
                "the model does not stop on",
                count=len(changed),
            )
        if len(rewritten) > len(changed):
            report.add(
                "reply-rewritten",
                f"the chat template renders {len(rewritten) - len(changed)} replies differently once later turns "
                "follow (reasoning dropped, tools moved), their closing token kept: trained inside the whole "
                "conversation, they teach text the model never produces after its generation prompt",
                count=len(rewritten) - len(changed),
            )
    if treated:
        report.add(
            "open-reasoning-block",
            f"the generation prompt opens a reasoning block that {treated} replies do not fill"
            + (": eosguard trains them after the block closed empty" if collator == "eosguard" else ""),
            count=treated,
        )
    return not (changed and collator != "eosguard")


# -- collator -------------------------------------------------------------------------------------------------


def check_collator(
    spec: CollatorSpec,
    tok: Any,
    chat: ChatTemplate,
    convs: Sequence[Conversation],
    report: DoctorReport,
    batch_size: int = 8,
    tools: Any = None,
) -> tuple[StopCheck, str, list[dict[str, Any]], StopTokenChecker]:
    """Collate real examples with the collator and count supervised turns whose stop token is masked (`chat`: the
    template `tok` was read into); returns the counts, a note on fallbacks, the batches and the checker."""
    collator, run_tok, note = build_collator(spec, tok)
    checker = StopTokenChecker(run_tok, chat)
    total = StopCheck()
    batches = []
    feats = features(spec, run_tok, convs, tools, chat)
    if spec != "eosguard":
        _check_double_bos(run_tok, feats, report)
    for b in range(0, len(feats), batch_size):
        try:
            batch = collator(feats[b : b + batch_size])
        except Exception as exc:
            raise EosguardError(f"the collator {spec!r} failed on real examples: {exc}") from None
        total += checker.check_batch(batch)
        batches.append(batch)
    return total, note, batches, checker


def _collator_step(
    collator: CollatorSpec,
    tok: Any,
    chat: ChatTemplate,
    convs: list[Conversation],
    show: int,
    tools: Any,
    report: DoctorReport,
) -> None:
    title = f"collator {collator!r}"
    try:
        if collator == "eosguard":  # eosguard trains with a prepared copy: pad chosen, its template kept
            tok = copy.deepcopy(tok)
            setup = prepare_tokenizer(tok, template_read=chat)
            chat = chat if setup.eos_changed_from is None else template_for(tok)  # the template may write eos_token
        check, note, batches, checker = check_collator(collator, tok, chat, convs, report, tools=tools)
    except TemplateError as exc:
        report.step(title, None, f"skipped: {exc.message}")
        return
    report.facts["collator"] = {
        "name": collator,
        "assistant_turns": check.assistant_turns,
        "supervised_turns": check.supervised_turns,
        "stop_trained": check.stop_trained,
        "stop_masked": check.stop_masked,
    }
    stops = "/".join(report.facts.get("stop_tokens") or [])
    if check.assistant_turns == 0:
        report.step(title, None, f"skipped: found no assistant reply in the collated rows{note}")
        return
    if check.stop_masked:
        report.add(
            "eos-masked",
            f"collating {len(convs)} real examples with the {collator!r} collator{note} leaves "
            f"{check.stop_masked} of {check.supervised_turns} assistant-closing {stops} tokens (or a token of their "
            "closing sequence) at label -100: the model never learns to stop",
            count=check.stop_masked,
        )
    report.step(
        title, not check.stop_masked, f"{check.stop_trained}/{check.supervised_turns} stop tokens trained{note}"
    )
    report.shown = _shown(checker, batches, show)


# -- entry point ----------------------------------------------------------------------------------------------


def open_setup(
    tokenizer: Any,
    report: DoctorReport,
    *,
    model_path: str | Path | None = None,
    template_args: dict[str, Any] | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
) -> tuple[Any, ChatTemplate | None, ChatRenderer | None, ModelFiles | None]:
    """The steps every doctor run starts with, each thing read once: the tokenizer (with the run's template
    arguments), the model folder's files, the template (read with the model's stop ids), one renderer over it (with
    the run's tools). Returns (tokenizer, template or None, renderer or None, model files or None)."""
    if template_args and getattr(tokenizer, "chat_template", None):
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = with_arguments(tokenizer.chat_template, template_args)
    report.step("tokenizer", True, f"{type(tokenizer).__name__}, {len(tokenizer)} tokens")
    model = ModelFiles(str(model_path)) if model_path else None
    chat = _read_template(tokenizer, model.eos_ids if model else None, report)
    renderer = ChatRenderer(tokenizer, template=chat, tools=tools) if chat is not None else None
    report.facts.update(
        {
            "end_of_turn": chat.end_of_turn if chat else None,
            "end_of_turn_id": chat.end_of_turn_id if chat else None,
            "stop_tokens": chat.stop_tokens if chat else [],
            "pad_token": tokenizer.pad_token,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token": tokenizer.eos_token,
            "padding_side": tokenizer.padding_side,
        }
    )
    return tokenizer, chat, renderer, model


def diagnose(
    tokenizer: Any,
    *,
    model_path: str | None = None,
    conversations: Sequence[Conversation] | None = None,
    max_length: int | None = None,
    collator: CollatorSpec = "eosguard",
    lora: bool = False,
    show: int = 0,
    tools: Sequence[dict[str, Any]] | None = None,
    template_args: dict[str, Any] | None = None,
    prepared: str | Path | Sequence[str | Path] | None = None,
    preferences: Sequence[Preference] | None = None,
    truncation_mode: str = "keep_start",
) -> DoctorReport:
    """Run every check; returns a report (nothing printed). Finding ids: `eosguard.checks.findings.FINDINGS`.

    tools: function schemas for conversations that bring none; template_args: the run's template arguments
    (every pipeline checked renders with them, as `chat_template_kwargs` does); prepared: rows another tool wrote
    (ids and labels, `eosguard.checks.rows`; preference ids, `eosguard.checks.preference_rows`), audited instead of
    conversations (`collator` builds the labels of rows written without any); preferences: preference records, made
    into rows by `collator`'s pipeline (`eosguard.checks.preference_data`) and audited, `max_length` and
    `truncation_mode` TRL's collator's.

    Example:
        >>> from eosguard.testing.fixtures import family_tokenizer, openhermes_tokenizer
        >>> diagnose(openhermes_tokenizer(pad="eos"), collator="transformers").ids
        ['eos-masked', 'pad-is-eos', 'padding-left']
        >>> diagnose(family_tokenizer("llama3", pad="eot"), collator="transformers").ids
        ['eos-masked', 'pad-is-eos', 'double-bos']
    """
    report = DoctorReport()
    tokenizer, chat, renderer, model = open_setup(
        tokenizer, report, model_path=model_path, template_args=template_args, tools=tools
    )
    probes = _template_step(renderer, report) if renderer is not None else None
    _check_pad(tokenizer, chat, report, rows=prepared is not None or preferences is not None)
    if model is not None:
        _check_model(model, tokenizer, chat, lora, report)
    if prepared is not None:
        _check_rows(prepared, tokenizer, chat, model, collator, show, report, max_length, truncation_mode)
        return _finished(tokenizer, chat, report)
    if preferences is not None:
        from eosguard.checks.preference_data import check_preference_records

        mode: Any = truncation_mode
        check_preference_records(preferences, tokenizer, renderer, collator, max_length, mode, show, report)
        return _finished(tokenizer, chat, report)
    convs = list(conversations) if conversations else list(probe_conversations(chat) if chat else PROBE_CONVERSATIONS)
    if conversations:
        _check_data(convs, tokenizer, renderer, max_length, collator, report)
    elif chat is not None and probes is not None:
        _check_replies(probes, chat, collator, report)
    if collator != "eosguard":  # eosguard renders prompts and examples with one renderer: a prefix by construction
        _check_prompt_prefix(tokenizer, convs, tools, report)
    if chat is None:
        report.step(f"collator {collator!r}", None, "skipped: no end-of-turn token to check")
    else:
        _collator_step(collator, tokenizer, chat, convs[:64], show, tools, report)
    return _finished(tokenizer, chat, report)


def diagnose_run(
    tokenizer: Any,
    report: DoctorReport,
    *,
    model_path: str | None = None,
    prepared: Sequence[str | Path] = (),
    show: int = 0,
    template_args: dict[str, Any] | None = None,
    max_length: int | None = None,
) -> DoctorReport:
    """Another tool's run, as it trained (`doctor --config`): the tokenizer it trained with, its model folder, the
    rows it wrote, held to the template; none of eosguard's own pipeline (its pad, a collator, probes) is run, since
    the framework built its labels itself. `max_length`: what TRL's preference collator cuts rows of preference ids
    to. Adds to `report` and returns it."""
    tokenizer, chat, renderer, model = open_setup(tokenizer, report, model_path=model_path, template_args=template_args)
    if renderer is not None:
        _template_step(renderer, report)
    if model is not None:
        _check_model(model, tokenizer, chat, False, report)
    if prepared:
        # the framework's own rows; preference records it saved are TRL's input (axolotl's `rl:` runs)
        _check_rows(list(prepared), tokenizer, chat, model, "eosguard", show, report, max_length, "keep_start", "trl")
    return report


def _check_rows(
    prepared: str | Path | Sequence[str | Path],
    tok: Any,
    chat: ChatTemplate | None,
    model: ModelFiles | None,
    collator: CollatorSpec,
    show: int,
    report: DoctorReport,
    max_length: int | None,
    truncation_mode: Any,
    records_by: CollatorSpec | None = None,
) -> None:
    """Rows another tool wrote: preference ids or records (`eosguard.checks.preference_data`; records made into rows
    by `records_by`, else `collator`) or SFT rows (`eosguard.checks.rows`), told apart by their columns."""
    from eosguard.checks import preference_data as pd
    from eosguard.checks.rows import check_prepared

    paths = [prepared] if isinstance(prepared, str | Path) else list(prepared)
    held = pd.holds_preferences(paths)
    if held == "ids":
        pd.check_preference_prepared(paths, tok, chat, max_length, truncation_mode, collator, show, report)
    elif held == "records":
        renderer = ChatRenderer(tok, template=chat) if chat is not None else None
        by = records_by or collator
        pd.check_prepared_records(paths, tok, renderer, by, max_length, truncation_mode, show, report)
    else:
        check_prepared(paths, tok, chat, _model_stops(model, tok), collator, show, report)


def _model_stops(model: ModelFiles | None, tok: Any) -> set[int] | None:
    """The ids the model stops on: its generation config's eos ids and the tokenizer's eos (None: no model)."""
    return {*model.eos_ids, tok.eos_token_id} - {None} if model is not None else None


def _finished(tok: Any, chat: ChatTemplate | None, report: DoctorReport) -> DoctorReport:
    _fixing_arguments(tok, chat, report)
    report.sort()
    return report


_BUILTIN_VARIABLES = frozenset(
    {
        "messages",
        "tools",
        "documents",
        "add_generation_prompt",
        "bos_token",
        "eos_token",
        "raise_exception",
        "strftime_now",
        "range",
        "loop",
        "namespace",
        "dict",
        "lipsum",
        "cycler",
        "joiner",
    }
)


def _fixing_arguments(tok: Any, chat: ChatTemplate | None, report: DoctorReport) -> None:
    """For an `open-reasoning-block` finding: the template argument (a boolean the template reads) whose value
    makes the generation prompt close the block itself, found by trying each; said in the finding's message."""
    found = next((f for f in report.findings if f.id == "open-reasoning-block"), None)
    if found is None or chat is None:
        return
    import jinja2
    from jinja2 import meta

    try:
        names = meta.find_undeclared_variables(
            jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(chat.source)
        )
    except jinja2.TemplateSyntaxError:
        return
    fixes = []
    for name in sorted(names - _BUILTIN_VARIABLES - set(chat.args)):
        for value in (False, True):
            try:
                trial = ChatRenderer(tok, template=ChatTemplate(tok, args={**chat.args, name: value}))
                if not any(r.treated for r in trial.examples(probe_conversations(chat))):
                    fixes.append(f"--template-arg {name}={str(value).lower()}")
            except (TemplateError, EosguardError):
                continue
    found.message += (
        f"; {' or '.join(fixes)} makes the prompt close it"
        if fixes
        else "; no template argument makes the prompt close it (train the replies with their reasoning)"
    )


def _shown(checker: StopTokenChecker, batches: list[dict[str, Any]], n: int) -> list[list[TokenView]]:
    tok = checker.template.tokenizer
    rows = [(batch, row) for batch in batches for row in range(len(batch["input_ids"]))]
    return [token_views(tok, b, r, set(checker.reply_stops(b["input_ids"][r].tolist()))) for b, r in rows[:n]]


__all__ = ["check_collator", "diagnose"]
