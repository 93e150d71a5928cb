"""`eosguard doctor --gguf FILE`: what llama.cpp, Ollama and LM Studio will stop on, read from the file itself.

The file's template is read by the same `ChatTemplate` training uses (a tokenizer loaded from the GGUF), or the
training folder's when `--tokenizer` / `--model` names one; each of its stop tokens (a final answer's, a tool
call's) must be in the file's vocabulary and among the ids the file declares engines stop on (eos, eot, eom).
llama.cpp also stops on a fixed list of token names (`<|im_end|>`, `<|eot_id|>`, ...) whatever the ids say: a stop
token missing from the ids but on that list is a warning (llama.cpp stops, engines reading the ids do not), one on
neither an error (measured: SmolLM2's GGUF with eos set to `<|endoftext|>` still stops in llama.cpp; with its
`<|im_end|>` renamed, it runs away until the fix sets eot; tests/recipes/test_fix.py). The embedded template must be the
trained one (when a folder is given), and `add_eos_token` off. Findings come from the same registry as the rest of
the doctor (`gguf-*` in `eosguard.checks.findings`), exit codes as usual.

Run as:
    eosguard doctor --gguf model.gguf [--tokenizer TRAINING_FOLDER]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eosguard.chat.templates import ChatTemplate
from eosguard.checks.doctor import read_trained_template
from eosguard.checks.report import DoctorReport
from eosguard.serve.gguf_files import LLAMA_CPP_STOP_NAMES, STOP_KEYS, GgufInfo, gguf_tokenizer, read_gguf


def problems(info: GgufInfo, template: ChatTemplate | None, trained_template: str | None) -> list[tuple[str, str]]:
    """(finding id, message) for every way this GGUF would not stop where `template` says replies end.

    `template`: the chat template to hold the file against (the training folder's, else the file's own);
    `trained_template`: the training folder's template source, for drift (None: not checked)."""
    out: list[tuple[str, str]] = []
    if info.template is None:
        out.append(("gguf-no-template", "the file embeds no chat template: engines fall back to one of their own"))
    elif trained_template is not None and info.template != trained_template:
        out.append(
            (
                "gguf-template-drift",
                "the embedded chat template differs from the one the model was trained with: prompts at inference "
                "are not the ones training rendered",
            )
        )
    if info.add_eos:
        out.append(("gguf-add-eos", "add_eos_token is on: engines append an eos to every prompt"))
    if template is None:
        return out
    vocab = {t: i for i, t in enumerate(info.tokens)}
    stops = set(info.stop_ids)
    for token in template.stop_tokens:
        if token not in vocab:
            out.append(("gguf-stop-not-in-vocab", f"the stop token {token} is not in the file's vocabulary"))
        elif vocab[token] not in stops:
            named = ", ".join(f"{k.split('.')[-1]} {info.token(info.ids[k])!r}" for k in STOP_KEYS if k in info.ids)
            where = f"{token} (id {vocab[token]}) is not among the ids the file stops on ({named or 'none set'})"
            if token in LLAMA_CPP_STOP_NAMES:
                out.append(("gguf-stop-by-name", f"{where}: llama.cpp stops on it by its name alone"))
            else:
                out.append(("gguf-eos-mismatch", f"{where}: llama.cpp, Ollama and LM Studio generate past it"))
    return out


def diagnose_gguf(path: str | Path, tokenizer: Any = None) -> DoctorReport:
    """The GGUF checks (see the module doc); `tokenizer`: the training folder's, whose template the file must keep
    (default: the tokenizer inside the file)."""
    report = DoctorReport(passed="no findings: engines reading this file stop on every stop token of its template")
    info = read_gguf(path)
    report.step("GGUF file", True, "; ".join(info.describe()))
    own = tokenizer is None
    tok = gguf_tokenizer(path) if own else tokenizer
    template = read_trained_template(tok, "the file's" if own else "the training's", report)
    if template is not None:
        source = "the file's own" if own else "the training folder's"
        report.step("chat template", True, f"{source}: replies end with {', '.join(template.stop_tokens)}")
    found = problems(info, template, None if own else tok.chat_template)
    for finding, message in found:
        report.add(finding, message)
    stops = ", ".join(
        f"{k.split('.')[-1]} {info.ids[k]} ({info.token(info.ids[k])!r})" for k in STOP_KEYS if k in info.ids
    )
    report.step(
        "stop metadata",
        None if template is None else not any(f.severity == "error" for f in report.findings),
        stops or "no eos, eot or eom set",
    )
    report.facts.update(
        {"gguf": str(path), "gguf_stop_ids": info.stop_ids, "stop_tokens": template.stop_tokens if template else []}
    )
    report.sort()
    return report
