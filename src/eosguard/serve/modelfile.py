"""An Ollama `Modelfile` held against the chat template the model was trained with (`doctor --modelfile`).

Ollama renders prompts with the Modelfile's `TEMPLATE` (a Go template), its `SYSTEM` first when a request brings no
system message, and stops on its `PARAMETER stop` lines and on the GGUF's own end-of-generation ids. So:

- `modelfile-no-template`: no `TEMPLATE`. Ollama before 0.30 renders `{{ .Prompt }}` unless it recognises the GGUF's
  template as one of its own (ollama#8982); 0.30 and later, the same recognition, else the GGUF's own Jinja
  template (llama-server's): either way the format is not the Modelfile's to prove;
- `modelfile-template-drift`: the `TEMPLATE` rendered as Ollama renders it (`eosguard.serve.ollama_prompt`: Go's
  `text/template` re-done in Python, `.Messages` or the legacy `.System` / `.Prompt` / `.Response` form, SYSTEM
  applied) on probe conversations (system, user and assistant turns, several turns, the generation prompt) is not
  the trained template's text for the same messages: the report names the probe, the character and both texts
  there. A template the renderer does not follow is a skipped step, never a pass; one Go refuses exits 2;
- `modelfile-no-stop`: a stop token of the template with no `PARAMETER stop` line (Ollama then stops there only
  through the GGUF's eos / eot ids, which the GGUF checks read when `FROM` names a local file).

The trained template comes from `--tokenizer` (the training folder), else from the GGUF that `FROM` names.

`write_modelfile` (used by `eosguard export gguf --ollama`) writes a `TEMPLATE` read off the trained template
(`ollama_template`: each role's text before and after its content, proven by the same rendering on probe
conversations; a default system message becomes `SYSTEM`), or none, with the reason, where no such Go template
writes what the template writes; and a `PARAMETER stop` line per stop token either way.

Run as:
    eosguard doctor --modelfile Modelfile --tokenizer runs/x/model
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import DataError
from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.chat.tokenizer_setup import tokenizer_adds_bos
from eosguard.checks.report import DoctorReport
from eosguard.serve.gotemplate import GoTemplateError, NotFollowed
from eosguard.serve.ollama_choice import prefers_gguf_template
from eosguard.serve.ollama_prompt import PROBES, OllamaGoTemplate, compare, default_system, probe

# Ollama's commands (parser/parser.go `isValidCommand`); any other word opening a line makes `ollama create` fail
COMMANDS = ("FROM", "LICENSE", "TEMPLATE", "SYSTEM", "ADAPTER", "DRAFT", "RENDERER", "PARSER", "PARAMETER", "MESSAGE",
            "REQUIRES")  # fmt: skip
# The parameters `ollama create` takes (Ollama 0.33: api/types.go `Options` and `Runner`, by JSON name, case and all),
# and those it skips with a warning (parser/parser.go `deprecatedParameters`); any other name fails `FormatParams`.
PARAMETERS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n", "temperature",
    "repeat_penalty", "presence_penalty", "frequency_penalty", "stop", "num_ctx", "num_batch", "num_gpu", "main_gpu",
    "use_mmap", "num_thread", "draft_num_predict",
})  # fmt: skip
DEPRECATED_PARAMETERS = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat", "mirostat_tau",
    "mirostat_eta",
})  # fmt: skip
_INSTRUCTION = re.compile(r"^\s*(" + "|".join(COMMANDS) + r")\b\s*(.*)$", re.I)


@dataclass
class Modelfile:
    """The instructions of a Modelfile that decide the prompt and stopping, each with its line (the last of an
    instruction given twice wins, as in Ollama)."""

    path: Path
    source: str | None = None
    source_line: int | None = None
    template: str | None = None
    template_line: int | None = None
    system: str | None = None
    stops: list[tuple[str, int]] = field(default_factory=list)

    def from_path(self) -> Path | None:
        """`FROM` read as a path, as Ollama expands it: `~` expanded, relative to the Modelfile's folder."""
        if self.source is None:
            return None
        path = Path(self.source).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def local_gguf(self) -> Path | None:
        """The GGUF file `FROM` names, when it is a local file (else a model name in Ollama's library)."""
        path = self.from_path()
        return path if path is not None and path.is_file() else None


def _unquote(text: str) -> tuple[str, bool]:
    """Ollama's parser/parser.go `unquote`: the text inside triple or single double quotes (no escapes), and
    whether it is closed."""
    for quote in ('"""', '"'):
        if text.startswith(quote):
            closed = len(text) >= 2 * len(quote) and text.endswith(quote)
            return (text[len(quote) : -len(quote)], True) if closed else ("", False)
    return text, True


def _value(text: str, lines: list[str], at: int) -> tuple[str, int]:
    """An instruction's argument as Ollama's parser reads it: trimmed, and a quoted one runs on over lines until it
    closes at a line's end; returns it and the index of the line after it."""
    body, j = text, at
    while True:
        value, closed = _unquote(body.strip())
        if closed:
            return value, j + 1
        j += 1
        if j >= len(lines):
            raise ValueError("a quoted string that never closes")
        body += "\n" + lines[j]


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
            if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                word = lines[i].split()[0]
                raise DataError(
                    f"{word!r}: Ollama's parser refuses the file here (a command must be one of "
                    f"{', '.join(c.lower() for c in COMMANDS)})",
                    path=str(p),
                    line=i + 1,
                )
            i += 1
            continue
        word, rest = m.group(1).upper(), m.group(2)
        try:
            if word == "PARAMETER":
                name, _, value = rest.strip().partition(" ")
                value, nxt = _value(value, lines, i)
                if name not in PARAMETERS | DEPRECATED_PARAMETERS:
                    raise ValueError(f"unknown parameter {name!r}: `ollama create` refuses it (api.FormatParams)")
                if name == "stop":
                    out.stops.append((value, i + 1))
                i = nxt
                continue
            value, nxt = _value(rest, lines, i)
        except ValueError as exc:
            raise DataError(str(exc), path=str(p), line=i + 1) from None
        if word == "FROM":
            out.source, out.source_line = value, i + 1
        elif word == "TEMPLATE":
            out.template, out.template_line = value, i + 1
        elif word == "SYSTEM":
            out.system = value
        i = nxt
    if out.source is None:
        raise DataError("no FROM line: not a Modelfile", path=str(p))
    _require_from_path(out)
    return out


def _require_from_path(mf: Modelfile) -> None:
    """A FROM written as a path (`./x.gguf`, `/models/x`, `~/x`, `x.gguf`) that is not there: Ollama's `CreateRequest`
    (parser/parser.go) then sends it as a model name of its library, and `ollama create` fails on it."""
    source = mf.source or ""
    pathlike = source.startswith((".", "/", "~")) or source.lower().endswith((".gguf", ".safetensors", ".bin"))
    path = mf.from_path()
    if pathlike and path is not None and not path.exists():
        raise DataError(
            f"FROM {source}: no such file or folder ({path}); Ollama would take it for a model name of its library "
            "and fail to create the model",
            path=str(mf.path),
            line=mf.source_line,
        )


def diagnose_modelfile(path: str | Path, tokenizer: Any = None, gguf: Path | None = None) -> DoctorReport:
    """The Modelfile checks (see the module doc), then the GGUF checks on the file `FROM` names when it is local, or
    on `gguf` (the file FROM names, given where FROM is a name of Ollama's library or a path not here)."""
    from eosguard.checks.doctor import read_trained_template
    from eosguard.serve.gguf_doctor import diagnose_gguf
    from eosguard.serve.gguf_files import gguf_tokenizer, read_gguf

    mf = read_modelfile(path)
    local, source = mf.local_gguf(), mf.from_path()
    gguf = gguf if gguf is not None else local
    report = DoctorReport(passed="no findings: Ollama renders the trained format and stops on every stop token")
    where = f"{mf.path}:{mf.source_line}"
    folder = source is not None and source.is_dir()
    named = (
        "a local GGUF" if local else f"given as --gguf {gguf}" if gguf
        else "a local folder (Ollama converts it; no GGUF to read here)" if folder else "not a local file"
    )  # fmt: skip
    report.step("Modelfile", True, f"FROM {mf.source} ({where}; {named})")
    tok = tokenizer if tokenizer is not None else (gguf_tokenizer(gguf) if gguf else None)
    if tok is None:
        report.step("chat template", None, "skipped: give --tokenizer (the training folder): FROM is no local GGUF")
        return report
    chat = read_trained_template(tok, "the trained", report)
    if chat is None:
        return report
    if mf.template is None:
        report.add(
            "modelfile-no-template",
            f"{where}: FROM with no TEMPLATE: Ollama before 0.30 renders `{{{{ .Prompt }}}}` unless it recognises the "
            "GGUF's template as one of its own (ollama#8982), 0.30 and later the same or the GGUF's own template: "
            "which format the model is prompted in is not this file's to say",
        )
    else:
        _check_template(mf, chat, read_gguf(gguf).template if gguf else None, report)
    stops = {s for s, _ in mf.stops}
    unlisted = [t for t in chat.stop_tokens if t not in stops]
    if unlisted:
        report.add(
            "modelfile-no-stop",
            f"{mf.path}: no `PARAMETER stop` line for {', '.join(unlisted)}: Ollama stops there only through the "
            "GGUF's eos / eot ids"
            + (" (checked below)" if gguf else ", which cannot be checked here (FROM is no local file)"),
        )
    report.step("stop lines", not unlisted, f"stop lines {sorted(stops) or 'none'}; stop tokens {chat.stop_tokens}")
    if gguf is not None:
        inner = diagnose_gguf(gguf, tokenizer)
        report.findings += inner.findings
        report.steps += inner.steps
        report.facts.update(inner.facts)
    report.sort()
    return report


def _check_template(mf: Modelfile, chat: ChatTemplate, gguf_template: str | None, report: DoctorReport) -> None:
    """The TEMPLATE rendered as Ollama renders it on the probes, against the trained template's text."""
    where = f"{mf.path}:{mf.template_line}"
    try:
        template = OllamaGoTemplate(mf.template or "")
        differences, compared = compare(chat, template, mf.system, [probe(roles, "a") for roles in PROBES])
    except GoTemplateError as exc:
        line = (mf.template_line or 1) + (exc.line or 1) - 1
        reason = f"TEMPLATE: Ollama refuses it (Go's text/template: {exc.reason})"
        raise DataError(reason, path=str(mf.path), line=line) from None
    except NotFollowed as exc:
        differences, compared, not_followed = [], 0, f"eosguard's Go template renderer does not follow {exc}"
    else:
        not_followed = "" if compared else "the trained template renders none of the probe conversations"
    if not_followed:
        report.step("TEMPLATE rendered", None, f"skipped: {not_followed}, so what Ollama writes is not known")
        return
    form = "the legacy .System / .Prompt / .Response form, turn by turn" if template.legacy else ".Messages"
    used = prefers_gguf_template(gguf_template, template) if gguf_template else ""
    used = f"; but {used}" if used else ""
    if not differences:
        system = ", SYSTEM first when a request brings no system message" if mf.system else ""
        report.step(
            "TEMPLATE rendered", True, f"Ollama writes the trained text on {compared} probes ({form}{system}){used}"
        )
        return
    first = differences[0]
    hint = ""
    default = default_system(chat)
    if default and not mf.system and all("system" not in d.roles for d in differences):
        hint = f"; with no system message the trained template writes its own ({default!r}), Ollama only from SYSTEM"
    report.add(
        "modelfile-template-drift",
        f"{where}: the TEMPLATE, rendered as Ollama renders it ({form}), {first.describe()}{hint}: the model is "
        f"prompted in another format than it was trained in ({len(differences)} of {compared} probes differ){used}",
    )
    report.step("TEMPLATE rendered", False, f"{len(differences)} of {compared} probes differ from the trained text")


# -- writing ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaTemplate:
    """A chat template as Ollama runs one: the Go `TEMPLATE`, and the default system message as `SYSTEM` (Ollama
    puts it first when a request brings no system message)."""

    text: str
    system: str | None = None


_ROLES = ("system", "user", "assistant")


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
    Ollama's rendering of it (`ollama_prompt`, the doctor's) then writes every probe conversation exactly as the
    template does, contents with whitespace around included (a template that trims content, branches on a turn's
    place or drops history is refused). The BOS the tokenizer adds when it encodes is left to the engine, which
    adds it too."""
    tok = chat.tokenizer
    control = chat.markers.control_tokens
    kept = [n for n, on in (("reasoning", chat.supports.reasoning), ("tool calls", chat.supports.tool_calls)) if on]
    if kept:  # Ollama's own template for such a family (found from the GGUF's) may keep them: not overridden
        return None, f"the template writes {' and '.join(kept)}, which a TEMPLATE of text turns would drop"
    sample = probe(PROBES[-1], "a")  # every role, each turn after every other: one reading gives all the text
    try:
        full = chat.render(sample, gen=True)
    except TemplateError as exc:
        return None, exc.message
    pieces, at = [], 0
    for c in (m["content"] for m in sample):
        found = full.find(c, at)
        if found < 0:
            return None, "the template does not write every message's content as it is"
        pieces.append(full[at:found])
        at = found + len(c)
    heads: dict[str, str] = {}
    feet: dict[str, str] = {}
    for i, role in enumerate(PROBES[-1][:-1]):
        cut = _split_join(pieces[i + 1], control)
        if cut is None:
            return None, f"no control token ends a {role} turn"
        feet.setdefault(role, cut[0])
        heads.setdefault(PROBES[-1][i + 1], cut[1])
    cut = _split_join(full[at:], control)
    if cut is None:
        return None, "no control token ends the last user turn"
    feet.setdefault("user", cut[0])
    generation = cut[1]
    bos = tok.bos_token or ""  # a BOS opens the text, and no turn writes it (SmolLM2's BOS is its <|im_start|>)
    bos = bos if bos and pieces[0].startswith(bos) and not any(bos in p for p in pieces[1:]) else ""
    heads["system"] = pieces[0][len(bos) :]
    written = "" if tokenizer_adds_bos(tok) else bos  # a BOS the engine adds when it encodes is not written twice
    system = default_system(chat)
    text = "".join(
        f'{{{{ {"if" if k == 0 else "else if"} eq .Role "{r}" }}}}{heads[r]}{{{{ .Content }}}}{feet[r]}'
        for k, r in enumerate(_ROLES)
    )
    fixed = [bos, generation, system or "", *heads.values(), *feet.values()]
    if any("{{" in p or "}}" in p or '"""' in p for p in fixed):
        return None, 'the template\'s text holds Go template delimiters or a """ that ends a Modelfile string'
    result = OllamaTemplate(f"{written}{{{{ range .Messages }}}}{text}{{{{ end }}}}{{{{ end }}}}{generation}", system)
    probes = [probe(roles, "b", pad=" ") for roles in PROBES]
    differences, _ = compare(chat, OllamaGoTemplate(result.text), system, probes)
    if differences:
        why = differences[0].describe(15)
        return None, f"a Go template of fixed text around each turn does not write what it writes: {why}"
    return result, ""


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
