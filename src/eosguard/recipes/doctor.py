"""`eosguard doctor`: the doctor on a user's setup, files read as given, one report per pipeline asked for.

`doctor(...)` reads the tokenizer, the conversations and the tools, runs `eosguard.checks.doctor.diagnose` for the
pipeline's collator (and a second one to compare), or the GGUF checks (`eosguard.serve.gguf_doctor`) on a converted
file, and writes the label viewer when asked. It returns the reports; printing them and the exit code are the CLI's.

Run as:
    eosguard doctor --tokenizer PATH --data chats.jsonl --collator transformers --compare eosguard --html labels.html
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.checks.findings import DoctorReport

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
    prepared: Path | None = None,
    trust_remote_code: bool = False,
) -> list[tuple[str, DoctorReport]]:
    """The reports, one per pipeline (`collator`, then `compare`), or the GGUF report; each report's `shown` holds
    `show` collated examples. `html`: the label viewer is written there too. prepared: rows another tool wrote,
    audited instead of conversations (`collator` builds the labels of rows written without any)."""
    from eosguard.base.loading import load_tokenizer

    if gguf is not None or modelfile is not None:
        from eosguard.serve.gguf_doctor import diagnose_gguf
        from eosguard.serve.modelfile import diagnose_modelfile

        folder = tokenizer or model
        tok = load_tokenizer(folder) if folder else None
        if modelfile is not None:
            return [("modelfile", diagnose_modelfile(modelfile, tok))]
        return [("gguf", diagnose_gguf(gguf, tok))]
    if tokenizer is None:
        raise EosguardError("give --tokenizer (a training setup) or --gguf (a converted model)")
    from eosguard.checks.doctor import check_template_files, diagnose
    from eosguard.data.records import load_conversations

    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    convs, summary = None, None
    if data:
        convs, loaded = load_conversations(list(data), skip_invalid=skip_invalid)
        summary = loaded.summary()
    collected = max(show, HTML_EXAMPLES if html else 0)
    reports = []
    for name in [collator] + ([compare] if compare else []):
        report = diagnose(
            tok,
            model_path=model,
            conversations=convs,
            max_length=max_length,
            collator=name,
            lora=lora,
            show=collected,
            tools=tools,
            template_args=template_args,
            prepared=prepared,
        )
        if summary:
            report.facts["data"] = summary
        check_template_files(tokenizer, report)
        reports.append((name, report.sort()))
    if html is not None:
        from eosguard.base.files import write_text
        from eosguard.recipes.pages import doctor_page

        write_text(html, doctor_page(reports, tokenizer))
    for _, report in reports:
        report.shown = report.shown[:show]
    return reports


__all__ = ["doctor"]
