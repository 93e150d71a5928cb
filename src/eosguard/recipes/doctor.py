"""`eosguard doctor`: the doctor on a user's setup, files read as given, one report per pipeline asked for.

`doctor(options)` takes one `DoctorOptions` (the command's options, typed, as the CLI builds them), refuses options
that do not combine, reads each input once and hands it down: the training setup (`eosguard.checks.doctor.diagnose`
for the pipeline's collator, and a second one to compare), a framework's config (`eosguard.checks.configs`, with the
tokenizer as that framework sets it up: `eosguard.checks.frameworks`), a GGUF (`eosguard.serve.gguf_doctor`) or an
Ollama Modelfile (`eosguard.serve.modelfile`); and writes the label viewer when asked. It returns the reports;
printing them and the exit code are the CLI's.

Run as:
    eosguard doctor --tokenizer PATH --data chats.jsonl --collator transformers --compare eosguard --html labels.html
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from eosguard.base.errors import EosguardError
from eosguard.checks.report import DoctorReport

HTML_EXAMPLES = 4  # collated examples in the label viewer when `show` asks for fewer

Mode = Literal["setup", "config", "gguf", "modelfile"]


@dataclass(frozen=True)
class DoctorOptions:
    """What `eosguard doctor` is asked to check: each field is the command's option of the same name (`--template-arg`
    gives `template_args`, parsed). `mode` says which kind of subject it is; `refuse_mixed` names options given
    that the mode does not use."""

    tokenizer: str | None = None
    model: str | None = None
    data: tuple[str, ...] = ()
    prepared: Path | None = None
    config: Path | None = None
    gguf: Path | None = None
    modelfile: Path | None = None
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    collator: str = "eosguard"
    compare: str | None = None
    lora: bool = False
    skip_invalid: bool = False
    show: int = 0
    html: Path | None = None
    tools: Path | None = None
    template_args: Mapping[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False

    @property
    def mode(self) -> Mode:
        """A Modelfile, a GGUF, a framework's config, or a training setup (the default)."""
        return next((m for m in ("modelfile", "gguf", "config") if getattr(self, m) is not None), "setup")

    def refuse_mixed(self) -> None:
        """Exit 2 naming every option given that this mode does not use (never dropped silently)."""
        given = {f.name for f in fields(self) if getattr(self, f.name) != f.default and f.name != "template_args"}
        given |= {"template_args"} if self.template_args else set()
        unused = sorted(given - USES[self.mode] - {self.mode})
        if self.mode == "setup" and self.data and self.prepared is not None:
            unused.append("data")
        if unused:
            names = ", ".join(_flag(n) for n in unused)
            subject = "--prepared" if self.mode == "setup" else _flag(self.mode)
            raise EosguardError(f"{names} does not combine with {subject}: {WHY[self.mode]}", hint=HINT[self.mode])
        if self.mode == "setup" and self.tokenizer is None and self.model is None:
            raise EosguardError("give --tokenizer (a training setup), --model, --config, --gguf or --modelfile")


_COMMON = {"tokenizer", "model", "show", "html", "template_args", "trust_remote_code"}
USES: dict[Mode, set[str]] = {
    "setup": {f.name for f in fields(DoctorOptions)} - {"config", "gguf", "modelfile"},
    "config": _COMMON | {"prepared"},
    "gguf": _COMMON,
    "modelfile": _COMMON | {"gguf"},
}
WHY: dict[Mode, str] = {
    "setup": "the doctor audits rows another tool wrote, or builds rows from conversations, not both",
    "config": "the config names the run's data, collator, lengths and LoRA; the doctor reads them from it",
    "gguf": "a GGUF is checked for what engines read from it, held to the trained template",
    "modelfile": "a Modelfile is checked for what Ollama renders and stops on, held to the trained template",
}
HINT: dict[Mode, str] = {
    "setup": "drop --data (the rows are audited), or --prepared (the conversations are checked)",
    "config": "--config takes --tokenizer, --model, --prepared (the run's rows), --template-arg, --show, --html",
    "gguf": "--gguf takes --tokenizer or --model (the trained template), --template-arg, --html",
    "modelfile": "--modelfile takes --gguf (the file FROM names), --tokenizer or --model, --template-arg, --html",
}


def _flag(name: str) -> str:
    return {"template_args": "--template-arg"}.get(name, "--" + name.replace("_", "-"))


def doctor(options: DoctorOptions) -> list[tuple[str, DoctorReport]]:
    """The reports, one per pipeline (`collator`, then `compare`), or the one report of a GGUF, a Modelfile or a
    framework's config; each report's `shown` holds `show` collated examples. `html`: the label viewer is written
    there too."""
    options.refuse_mixed()
    collected = max(options.show, HTML_EXAMPLES if options.html else 0)
    if options.mode in ("gguf", "modelfile"):
        reports = [(options.mode, _served(options))]
    elif options.mode == "config":
        reports = [("config", _config(options, collected))]
    else:
        reports = _setup(options, collected)
    if options.html is not None:
        from eosguard.base.files import write_text
        from eosguard.recipes.pages import doctor_page

        subject = options.tokenizer or options.model or options.gguf or options.modelfile or options.config
        write_text(options.html, doctor_page(reports, str(subject)))
    for _, report in reports:
        report.shown = report.shown[: options.show]
    return reports


def _tokenizer(options: DoctorOptions, source: str | None = None, *, with_args: bool = True) -> Any:
    """The tokenizer named (`source`, else --tokenizer, else --model's folder), with the run's template arguments
    (`with_args`); None where none is named."""
    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.template_args import with_arguments

    name = source or options.tokenizer or options.model
    if name is None:
        return None
    tok = load_tokenizer(str(name), trust_remote_code=options.trust_remote_code)
    if with_args and options.template_args and getattr(tok, "chat_template", None):
        tok.chat_template = with_arguments(tok.chat_template, dict(options.template_args))
    return tok


def _served(options: DoctorOptions) -> DoctorReport:
    """A GGUF, or a Modelfile (and the GGUF its FROM names, or --gguf), held to the trained template."""
    from eosguard.serve.gguf_doctor import diagnose_gguf
    from eosguard.serve.modelfile import diagnose_modelfile

    tok = _tokenizer(options)
    if options.modelfile is not None:
        return diagnose_modelfile(options.modelfile, tok, gguf=options.gguf)
    return diagnose_gguf(options.gguf, tok)


def _setup(options: DoctorOptions, show: int) -> list[tuple[str, DoctorReport]]:
    """A training setup: a tokenizer with its data (conversations or preference records; or prepared rows), for
    each collator asked."""
    from eosguard.checks.doctor import diagnose
    from eosguard.data.records import data_kind, load_conversations, load_preferences, load_tools
    from eosguard.recipes.prepare import require_same_vocabulary

    tok = _tokenizer(options)
    if options.prepared is not None:
        require_same_vocabulary(options.prepared, tok)
    tools = list(load_tools(options.tools)) if options.tools else None
    convs, prefs, summary = None, None, None
    kind = data_kind(list(options.data)) if options.data else None
    if kind in ("paired", "unpaired"):
        prefs, loaded = load_preferences(list(options.data), skip_invalid=options.skip_invalid)
        summary = loaded.summary()
    elif options.data:
        convs, loaded = load_conversations(list(options.data), skip_invalid=options.skip_invalid)
        summary = loaded.summary()
    _refuse_truncation_mode(options, kind)
    reports = []
    for name in [options.collator] + ([options.compare] if options.compare else []):
        report = diagnose(
            tok,
            model_path=options.model,
            conversations=convs,
            max_length=options.max_length,
            collator=name,
            lora=options.lora,
            show=show,
            tools=tools,
            prepared=options.prepared,
            preferences=prefs,
            truncation_mode=options.truncation_mode,
        )
        if summary:
            report.facts["data"] = summary
        check_template_files(str(options.tokenizer or options.model), report)
        reports.append((name, report.sort()))
    return reports


def _refuse_truncation_mode(options: DoctorOptions, kind: str | None) -> None:
    """`--truncation-mode` is TRL's preference collator's: refused where no preference rows are checked, and for
    KTO, whose collator keeps the start alone."""
    if options.truncation_mode == "keep_start":
        return
    if options.prepared is not None:
        from eosguard.data.preference_rows import preference_kind

        kind = preference_kind(options.prepared)
    if kind == "pairwise":
        raise EosguardError("--truncation-mode: these rows were cut when they were tokenized; their collators only pad")
    if kind not in ("paired", "unpaired"):
        raise EosguardError(
            "--truncation-mode is TRL's preference collator's (DPOConfig.truncation_mode): it applies to preference "
            "records (--data) or rows of preference ids (--prepared)"
        )
    if kind == "unpaired":
        raise EosguardError("--truncation-mode keep_end: KTO's collator keeps the start alone (KTOConfig has none)")


def check_template_files(folder: str | Path, report: DoctorReport) -> None:
    """A local tokenizer folder whose `chat_template.jinja` and `tokenizer_config.json` templates differ: one engine
    reads one, another the other."""
    folder = Path(folder)
    jinja, config = folder / "chat_template.jinja", folder / "tokenizer_config.json"
    if not (jinja.is_file() and config.is_file()):
        return
    try:
        other = json.loads(config.read_text()).get("chat_template")
    except (OSError, ValueError) as exc:
        raise EosguardError(f"{config}: cannot read: {exc}") from None
    if isinstance(other, str) and other.strip() != jinja.read_text(encoding="utf-8").strip():
        report.add(
            "template-files-differ",
            f"{jinja} and the `chat_template` of {config} differ: transformers and vLLM render with the first, "
            "tools that read tokenizer_config.json alone with the second",
        )


def _config(options: DoctorOptions, show: int) -> DoctorReport:
    """A framework's config: the tokenizer as that framework sets it up (its tokens, its eos, its named template),
    its settings that decide the stop token, then the run's own files where they are local: the model folder
    (--model) and the prepared rows (--prepared, else the config's); findings told in the framework's keys."""
    from eosguard.checks.config_files import model_config, read_training_config
    from eosguard.checks.configs import RunTokenizer, advise, check_training_config
    from eosguard.checks.doctor import diagnose_run
    from eosguard.checks.preference_configs import advise_preference, check_preference_config, rows_length
    from eosguard.recipes.prepare import require_same_vocabulary

    assert options.config is not None
    cfg = read_training_config(options.config)
    source = options.tokenizer or cfg.tokenizer
    local = options.tokenizer is not None or (source is not None and Path(source).expanduser().exists())
    if not local:
        report = DoctorReport()
        why = f"the config's tokenizer {source} is no local folder (give --tokenizer)" if source else "no tokenizer"
        check_training_config(cfg, RunTokenizer(None, None, None, why), report)
        return report.sort()
    base = _tokenizer(options, str(source), with_args=False)  # the framework may replace its template
    setup, resized = _framework_tokenizer(cfg.framework, cfg.framework_settings(), base)
    prepared = [options.prepared] if options.prepared is not None else cfg.prepared()
    for folder in prepared:
        require_same_vocabulary(folder, setup.tokenizer)
    report = DoctorReport()
    report.step(f"tokenizer as {cfg.framework} sets it up", True, _setup_detail(setup))
    stops = None
    if setup.template.source is None:
        report.step("chat template", None, f"skipped: {setup.template.how}")
    else:
        args = dict(options.template_args)
        diagnose_run(setup.tokenizer, report, model_path=options.model, prepared=prepared, show=show,
                     template_args=args, max_length=rows_length(cfg))  # fmt: skip
        stops = report.facts.get("stop_tokens") or None
    model = model_config(cfg)
    run = RunTokenizer(
        stops, setup.tokenizer.eos_token, setup.added, "no chat template read (above)", resized,
        setup.template.source or "", model.get("model_type"), setup.multipiece, bool(model.get("tie_word_embeddings")),
    )  # fmt: skip
    check_training_config(cfg, run, report)
    check_preference_config(cfg, setup.tokenizer, report)
    if not prepared:
        where = options.prepared or cfg.get("tokenized_path") or cfg.get("dataset_prepared_path")
        report.step("prepared rows", None, f"skipped: {'no local ' + str(where) if where else 'the config names none'}")
    advise(cfg, report)
    advise_preference(cfg, report)
    return report.sort()


def _framework_tokenizer(framework: str, settings: Mapping[str, Any], tok: Any) -> tuple[Any, bool]:
    from eosguard.checks.frameworks import axolotl_tokenizer, llamafactory_tokenizer

    if framework == "axolotl":
        return axolotl_tokenizer(settings, tok), False
    return llamafactory_tokenizer(settings, tok)


def _setup_detail(setup: Any) -> str:
    how = setup.template.how if setup.template.source else "not resolved (below)"
    parts = [f"chat template: {how}", f"eos {setup.tokenizer.eos_token}"]
    parts += [f"new tokens {setup.added}"] if setup.added else []
    return "; ".join(parts + setup.notes)


__all__ = ["DoctorOptions", "check_template_files", "doctor"]
