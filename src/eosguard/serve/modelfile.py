"""An Ollama `Modelfile` held against the chat template the model was trained with (`doctor --modelfile`).

Ollama renders prompts with the Modelfile's `TEMPLATE` (a Go template) and stops on its `PARAMETER stop` lines, and on
the GGUF's own end-of-generation ids. A `FROM` with no `TEMPLATE` gets `{{ .Prompt }}` unless Ollama recognises the
GGUF's template as one of its own (ollama#8982): the model never sees its chat format. So:

- `modelfile-no-template`: no `TEMPLATE`;
- `modelfile-template-drift`: a `TEMPLATE` that never writes a stop token of the trained template, or its assistant
  header: it is not the format the model was trained in;
- `modelfile-no-stop`: a stop token of the template with no `PARAMETER stop` line (Ollama then stops there only
  through the GGUF's eos / eot ids, which the GGUF checks read when `FROM` names a local file).

The trained template comes from `--tokenizer` (the training folder), else from the GGUF that `FROM` names.

Run as:
    eosguard doctor --modelfile Modelfile --tokenizer runs/x/model
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import DataError
from eosguard.checks.report import DoctorReport

_INSTRUCTION = re.compile(r"^\s*(FROM|TEMPLATE|PARAMETER|SYSTEM|ADAPTER|LICENSE|MESSAGE|REQUIRES)\b\s*(.*)$", re.I)


@dataclass
class Modelfile:
    """The instructions of a Modelfile that decide stopping, each with its line."""

    path: Path
    source: str | None = None
    source_line: int | None = None
    template: str | None = None
    template_line: int | None = None
    stops: list[tuple[str, int]] = field(default_factory=list)

    def local_gguf(self) -> Path | None:
        """The GGUF file `FROM` names, when it is a local file (else a model name in Ollama's library)."""
        if self.source is None:
            return None
        path = Path(self.source).expanduser()
        path = path if path.is_absolute() else self.path.parent / path
        return path if path.is_file() else None


def _value(text: str, lines: list[str], at: int) -> tuple[str, int]:
    """An instruction's argument: a quoted string ("...", or \"\"\"...\"\"\" over lines) or the rest of the line;
    returns it and the index of the line after it."""
    text = text.strip()
    if text.startswith('"""'):
        body = text[3:]
        j = at
        while '"""' not in body:
            j += 1
            if j >= len(lines):
                raise ValueError('a """ string that never closes')
            body += "\n" + lines[j]
        return body[: body.index('"""')], j + 1
    if text.startswith('"'):
        return shlex.split(text)[0], at + 1
    return text, at + 1


def read_modelfile(path: str | Path) -> Modelfile:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", path=str(p)) from None
    out = Modelfile(p)
    i = 0
    while i < len(lines):
        m = _INSTRUCTION.match(lines[i])
        if not m or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        word, rest = m.group(1).upper(), m.group(2)
        try:
            if word == "PARAMETER":
                name, _, value = rest.strip().partition(" ")
                if name.lower() == "stop":
                    out.stops.append((_value(value, lines, i)[0], i + 1))
                i += 1
                continue
            value, nxt = _value(rest, lines, i)
        except ValueError as exc:
            raise DataError(str(exc), path=str(p), line=i + 1) from None
        if word == "FROM":
            out.source, out.source_line = value, i + 1
        elif word == "TEMPLATE":
            out.template, out.template_line = value, i + 1
        i = nxt
    if out.source is None:
        raise DataError("no FROM line: not a Modelfile", path=str(p))
    return out


def diagnose_modelfile(path: str | Path, tokenizer: Any = None) -> DoctorReport:
    """The Modelfile checks (see the module doc), then the GGUF checks on the file `FROM` names when it is local."""
    from eosguard.checks.doctor import read_trained_template
    from eosguard.serve.gguf_doctor import diagnose_gguf
    from eosguard.serve.gguf_files import gguf_tokenizer

    mf = read_modelfile(path)
    gguf = mf.local_gguf()
    report = DoctorReport(passed="no findings: Ollama renders the trained format and stops on every stop token")
    where = f"{mf.path}:{mf.source_line}"
    report.step("Modelfile", True, f"FROM {mf.source} ({where}; {'a local GGUF' if gguf else 'not a local file'})")
    tok = tokenizer if tokenizer is not None else (gguf_tokenizer(gguf) if gguf else None)
    if tok is None:
        report.step("chat template", None, "skipped: give --tokenizer (the training folder): FROM is no local GGUF")
        return report
    chat = read_trained_template(tok, "the trained", report)
    if chat is None:
        return report
    header = tok.decode(chat.assistant_header_ids, skip_special_tokens=False)
    if mf.template is None:
        report.add(
            "modelfile-no-template",
            f"{where}: FROM with no TEMPLATE: Ollama renders `{{{{ .Prompt }}}}` unless it recognises the GGUF's "
            "template as one of its own (ollama#8982), so the model may never see the chat format it was trained in",
        )
    else:
        missing = [t for t in [*chat.stop_tokens, header] if t.strip() and t not in mf.template]
        if missing:
            report.add(
                "modelfile-template-drift",
                f"{mf.path}:{mf.template_line}: the TEMPLATE never writes {', '.join(missing)}, which the trained "
                "template writes around every reply: Ollama prompts in another format",
            )
    stops = {s for s, _ in mf.stops}
    unlisted = [t for t in chat.stop_tokens if t not in stops]
    if unlisted:
        report.add(
            "modelfile-no-stop",
            f"{mf.path}: no `PARAMETER stop` line for {', '.join(unlisted)}: Ollama stops there only through the "
            "GGUF's eos / eot ids"
            + (" (checked below)" if gguf else ", which cannot be checked here (FROM is no local file)"),
        )
    ok = not any(f.severity == "error" for f in report.findings)
    report.step("TEMPLATE and stop lines", ok, f"stop lines {sorted(stops) or 'none'}; stop tokens {chat.stop_tokens}")
    if gguf is not None:
        inner = diagnose_gguf(gguf, tokenizer)
        report.findings += inner.findings
        report.steps += inner.steps
        report.facts.update(inner.facts)
    report.sort()
    return report


__all__ = ["Modelfile", "diagnose_modelfile", "read_modelfile"]
