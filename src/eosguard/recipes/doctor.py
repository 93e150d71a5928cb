"""`eosguard doctor`: the doctor on a user's setup, files read as given, one report per pipeline asked for.

`doctor(...)` reads the tokenizer, the conversations and the tools, runs `eosguard.checks.doctor.diagnose` for the
pipeline's collator (and a second one to compare), or the GGUF checks (`eosguard.serve.gguf_doctor`) on a converted
file, and writes the label viewer when asked. It returns the reports; printing them and the exit code are the CLI's.

Run as:
    eosguard doctor --tokenizer PATH --data chats.jsonl --collator transformers --compare eosguard --html labels.html
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.checks.report import DoctorReport

HTML_EXAMPLES = 4  # collated examples in the label viewer when `show` asks for fewer


def doctor(
    *,
    tokenizer: str | None = None,
    model: str | None = None,
    data: Sequence[str] = (),
    max_length: int | None = None,
    collator: str = "eosguard",
    compare: str | None = None,
    lora: bool = False,
    skip_invalid: bool = False,
    show: int = 0,
    html: Path | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    template_args: dict[str, Any] | None = None,
    gguf: Path | None = None,
    modelfile: Path | None = None,
    config: Path | None = None,
    prepared: Path | None = None,
    trust_remote_code: bool = False,
) -> list[tuple[str, DoctorReport]]:
    """The reports, one per pipeline (`collator`, then `compare`), or the one report of a GGUF, a Modelfile or a
    framework's config; each report's `shown` holds `show` collated examples. `html`: the label viewer is written
    there too. prepared: rows another tool wrote, audited instead of conversations (`collator` builds the labels of
    rows written without any)."""
    from eosguard.base.loading import load_tokenizer

    collected = max(show, HTML_EXAMPLES if html else 0)
    if gguf is not None or modelfile is not None:
        from eosguard.serve.gguf_doctor import diagnose_gguf
        from eosguard.serve.modelfile import diagnose_modelfile

        folder = tokenizer or model
        tok = load_tokenizer(folder) if folder else None
        reports = (
            [("modelfile", diagnose_modelfile(modelfile, tok))] if modelfile else [("gguf", diagnose_gguf(gguf, tok))]
        )
    elif config is not None:
        reports = [("config", _config(config, tokenizer, model, collected))]
    elif tokenizer is None:
        raise EosguardError("give --tokenizer (a training setup), --config, --gguf or --modelfile")
    else:
        reports = _setup(tokenizer, model, data, max_length, collator, compare, lora, skip_invalid, collected, tools,
                         template_args, prepared, trust_remote_code)  # fmt: skip
    if html is not None:
        from eosguard.base.files import write_text
        from eosguard.recipes.pages import doctor_page

        write_text(html, doctor_page(reports, str(tokenizer or model or gguf or modelfile or config)))
    for _, report in reports:
        report.shown = report.shown[:show]
    return reports


def _setup(
    tokenizer: str,
    model: str | None,
    data: Sequence[str],
    max_length: int | None,
    collator: str,
    compare: str | None,
    lora: bool,
    skip_invalid: bool,
    show: int,
    tools: Sequence[dict[str, Any]] | None,
    template_args: dict[str, Any] | None,
    prepared: Path | None,
    trust_remote_code: bool,
) -> list[tuple[str, DoctorReport]]:
    """A training setup: a tokenizer with its data (or prepared rows), for each collator asked."""
    from eosguard.base.loading import load_tokenizer
    from eosguard.checks.doctor import diagnose
    from eosguard.data.records import load_conversations

    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    convs, summary = None, None
    if data:
        convs, loaded = load_conversations(list(data), skip_invalid=skip_invalid)
        summary = loaded.summary()
    reports = []
    for name in [collator] + ([compare] if compare else []):
        report = diagnose(
            tok,
            model_path=model,
            conversations=convs,
            max_length=max_length,
            collator=name,
            lora=lora,
            show=show,
            tools=tools,
            template_args=template_args,
            prepared=prepared,
        )
        if summary:
            report.facts["data"] = summary
        check_template_files(tokenizer, report)
        reports.append((name, report.sort()))
    return reports


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


def _config(path: Path, tokenizer: str | None, model: str | None, show: int) -> DoctorReport:
    """A framework's config: its stop-token settings, then the doctor on the tokenizer it uses (its own chat template
    as the config sets it) and on the prepared rows it left, where those are local."""
    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.templates import TemplateError, template_for
    from eosguard.checks.configs import check_training_config, read_training_config
    from eosguard.checks.doctor import diagnose

    cfg = read_training_config(path)
    source = tokenizer or cfg.tokenizer
    if source is None or not (tokenizer or Path(source).expanduser().exists()):
        report = DoctorReport()
        check_training_config(cfg, None, None, report)
        return report.sort()
    tok = load_tokenizer(str(source))
    if cfg.get("chat_template_jinja"):
        tok.chat_template = cfg.get("chat_template_jinja")  # axolotl renders with it, and saves it
    prepared = cfg.prepared()
    report = diagnose(tok, model_path=model, prepared=prepared or None, show=show)
    try:
        chat = template_for(tok)
        stops = chat.stop_tokens if chat.problem is None else None
    except TemplateError:
        stops = None
    check_training_config(cfg, stops, tok.eos_token, report)
    if not prepared:
        where = cfg.get("tokenized_path") or cfg.get("dataset_prepared_path")
        report.step("prepared rows", None, f"skipped: {'no local ' + str(where) if where else 'the config names none'}")
    return report.sort()


__all__ = ["doctor"]
