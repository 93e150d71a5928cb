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

`write_modelfile` (used by `eosguard export gguf --ollama`) writes a `TEMPLATE` read off the trained template
(`ollama_template`: each role's text before and after its content, proven to give the template's own text on probe
conversations; a default system message becomes `SYSTEM`), or none, with the reason, where no such Go template
writes what the template writes; and a `PARAMETER stop` line per stop token either way.

Run as:
    eosguard doctor --modelfile Modelfile --tokenizer runs/x/model
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import DataError
from eosguard.chat.templates import ChatTemplate, TemplateError, common_prefix
from eosguard.chat.tokenizer_setup import tokenizer_adds_bos
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


def diagnose_modelfile(path: str | Path, tokenizer: Any = None, gguf: Path | None = None) -> DoctorReport:
    """The Modelfile checks (see the module doc), then the GGUF checks on the file `FROM` names when it is local, or
    on `gguf` (the file FROM names, given where FROM is a name of Ollama's library or a path not here)."""
    from eosguard.checks.doctor import read_trained_template
    from eosguard.serve.gguf_doctor import diagnose_gguf
    from eosguard.serve.gguf_files import gguf_tokenizer

    mf = read_modelfile(path)
    gguf = gguf if gguf is not None else mf.local_gguf()
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


# -- writing ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaTemplate:
    """A chat template as Ollama runs one: the Go `TEMPLATE`, and the default system message as `SYSTEM` (Ollama
    puts it first when a request brings no system message)."""

    text: str
    system: str | None = None


_ROLES = ("system", "user", "assistant")
_PROBES = (  # role sequences Ollama prompts with: the generation prompt follows a user turn
    ("user",),
    ("system", "user"),
    ("user", "assistant", "user"),
    ("system", "user", "assistant", "user", "assistant", "user"),
)


def _probe(roles: Sequence[str], salt: str, pad: str = "") -> list[dict[str, str]]:
    return [{"role": r, "content": f"{pad}{r} {salt}{i} says\nthis.{pad}"} for i, r in enumerate(roles)]


def _split_join(join: str, control: Sequence[str]) -> tuple[str, str] | None:
    """The text between two contents cut into the first one's footer and the next one's header: the footer ends
    after the first control token and the whitespace after it (`<|im_end|>\n` + `<|im_start|>user\n`)."""
    found = [(join.find(t), t) for t in control if t and t in join]
    if not found:
        return None
    at, token = min(found)
    end = at + len(token)
    while end < len(join) and join[end] in " \n":
        end += 1
    return join[:end], join[end:]


def ollama_template(chat: ChatTemplate) -> tuple[OllamaTemplate | None, str]:
    """The Go TEMPLATE that writes what `chat` writes for conversations of text (system, user and assistant turns,
    then the generation prompt), or None and why not; none for a template that writes reasoning or tool calls.

    Read off one rendering: the text around each content, cut at the control token that ends a turn; kept only if
    it then writes every probe conversation exactly as the template does, contents with whitespace around included
    (a template that trims content, branches on a turn's place or drops history is refused). The BOS the tokenizer
    adds when it encodes is left to the engine, which adds it too."""
    tok = chat.tokenizer
    control = chat.markers.control_tokens
    kept = [n for n, on in (("reasoning", chat.supports.reasoning), ("tool calls", chat.supports.tool_calls)) if on]
    if kept:  # Ollama's own template for such a family (found from the GGUF's) may keep them: not overridden
        return None, f"the template writes {' and '.join(kept)}, which a TEMPLATE of text turns would drop"
    probe = _probe(_PROBES[-1], "a")  # every role, each turn after every other: one reading gives all the text
    try:
        full = chat.render(probe, gen=True)
    except TemplateError as exc:
        return None, exc.message
    pieces, at = [], 0
    for c in (m["content"] for m in probe):
        found = full.find(c, at)
        if found < 0:
            return None, "the template does not write every message's content as it is"
        pieces.append(full[at:found])
        at = found + len(c)
    gen_tail = full[at:]
    heads: dict[str, str] = {}
    feet: dict[str, str] = {}
    for i, role in enumerate(_PROBES[-1][:-1]):
        cut = _split_join(pieces[i + 1], control)
        if cut is None:
            return None, f"no control token ends a {role} turn"
        feet.setdefault(role, cut[0])
        heads.setdefault(_PROBES[-1][i + 1], cut[1])
    cut = _split_join(gen_tail, control)
    if cut is None:
        return None, "no control token ends the last user turn"
    feet.setdefault("user", cut[0])
    generation = cut[1]
    start = pieces[0]
    bos = tok.bos_token or ""  # a BOS opens the text, and no turn writes it (SmolLM2's BOS is its <|im_start|>)
    bos = bos if bos and start.startswith(bos) and not any(bos in p for p in pieces[1:]) else ""
    heads["system"] = start[len(bos) :]
    written = "" if tokenizer_adds_bos(tok) else bos  # a BOS the engine adds when it encodes is not written twice
    try:
        system = _default_system(chat, bos, heads, feet)
    except TemplateError as exc:
        return None, exc.message
    text = "".join(
        f'{{{{ {"if" if k == 0 else "else if"} eq .Role "{r}" }}}}{heads[r]}{{{{ .Content }}}}{feet[r]}'
        for k, r in enumerate(_ROLES)
    )
    fixed = [bos, generation, system or "", *heads.values(), *feet.values()]
    if any("{{" in p or "}}" in p or '"""' in p for p in fixed):
        return None, 'the template\'s text holds Go template delimiters or a """ that ends a Modelfile string'
    result = OllamaTemplate(f"{written}{{{{ range .Messages }}}}{text}{{{{ end }}}}{{{{ end }}}}{generation}", system)
    for roles in _PROBES:
        messages = _probe(roles, "b", pad=" ")
        try:
            want = chat.render(messages, gen=True)
        except TemplateError as exc:
            return None, exc.message
        if roles[0] != "system" and system:  # Ollama puts SYSTEM first when it is not empty
            messages = [{"role": "system", "content": system}, *messages]
        got = bos + "".join(heads[m["role"]] + m["content"] + feet[m["role"]] for m in messages) + generation
        if got != want:
            at = common_prefix(got, want)
            return None, (
                f"a Go template of fixed text around each turn does not write what it writes for [{', '.join(roles)}]"
                f": at character {at} it writes {want[at : at + 30]!r}, the Go template {got[at : at + 30]!r}"
            )
    return result, ""


def _default_system(chat: ChatTemplate, bos: str, heads: dict[str, str], feet: dict[str, str]) -> str | None:
    """The system message the template writes when a conversation brings none (SmolLM2's), or None."""
    probe = _probe(("user",), "c")
    text = chat.render(probe, gen=True)
    head, foot = bos + heads["system"], feet["system"]
    if not text.startswith(head):
        return None
    end = text.find(foot + heads["user"] + probe[0]["content"], len(head))
    return text[len(head) : end] if end >= 0 else None


def write_modelfile(gguf: Path, chat: ChatTemplate) -> tuple[Path, str]:
    """An Ollama `Modelfile` beside the GGUF: the file, the trained template as `TEMPLATE` (and `SYSTEM`) where
    `ollama_template` reads one, and a `PARAMETER stop` line per stop token (Ollama stops on these whatever template
    it runs). Returns the path and why no TEMPLATE was written ("" when one was)."""
    path = gguf.with_name("Modelfile")
    template, why = ollama_template(chat)
    lines = [f"FROM ./{gguf.name}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template.text}"""')
        if template.system:
            lines.append(f'SYSTEM """{template.system}"""')
    lines += [f'PARAMETER stop "{t}"' for t in chat.stop_tokens]
    path.write_text("\n".join(lines) + "\n")
    return path, why


__all__ = ["Modelfile", "OllamaTemplate", "diagnose_modelfile", "ollama_template", "read_modelfile", "write_modelfile"]
