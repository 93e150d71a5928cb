"""The TEMPLATEs `eosguard export gguf --ollama` writes, run by Go's own `text/template`: outside CI (needs Go).

`eosguard.serve.modelfile.ollama_template` proves a TEMPLATE by writing it out the way Go would for its small subset
(`range .Messages`, `if` / `else if eq .Role`, `.Content`). This check runs the same TEMPLATEs through Go's
`text/template`, the package Ollama renders prompts with, on conversations of its own (a system message or the
template's default one, multi-turn, contents with whitespace and newlines around) and compares the text with the
Jinja template's. Needs `go` on PATH (Debian: `apt-get install golang-go`); exit 1 on any difference.

Run as:
    python benchmarks/go_template_check.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from eosguard.chat.templates import ChatTemplate
from eosguard.chat.tokenizer_setup import tokenizer_adds_bos
from eosguard.serve.modelfile import ollama_template
from eosguard.testing.fixtures import family_tokenizer, smollm2_tokenizer, trl_tokenizer

RUNNER = """package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

type Message struct {
\tRole    string `json:"role"`
\tContent string `json:"content"`
}

func main() {
\tvar in struct {
\t\tTemplate string    `json:"template"`
\t\tMessages []Message `json:"messages"`
\t}
\tif err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
\t\tpanic(err)
\t}
\ttemplate.Must(template.New("t").Parse(in.Template)).Execute(os.Stdout, map[string]any{"Messages": in.Messages})
}
"""

CONVERSATIONS = [
    [("user", "Hi there")],
    [("system", "Be brief."), ("user", "What is 2+2?")],
    [("user", "  spaced  "), ("assistant", "\nFour.\n"), ("user", "And 3+3?")],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e")],
]


def build(folder: Path) -> Path:
    (folder / "main.go").write_text(RUNNER)
    subprocess.run(["go", "mod", "init", "gocheck"], cwd=folder, check=True, capture_output=True)
    subprocess.run(["go", "build", "-o", "gocheck", "."], cwd=folder, check=True, capture_output=True)
    return folder / "gocheck"


def main() -> int:
    if shutil.which("go") is None:
        print("skipped: no `go` on PATH (Debian: apt-get install golang-go)")
        return 2
    tokenizers = {
        "SmolLM2 (shipped)": smollm2_tokenizer,
        "ChatML": lambda: family_tokenizer("chatml"),
        "Phi-3": lambda: family_tokenizer("phi3"),
        "TRL lfm2": lambda: trl_tokenizer("lfm2"),
        "TRL phi3_5": lambda: trl_tokenizer("phi3_5"),
    }
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        runner = build(Path(tmp))
        for name, load in tokenizers.items():
            tok = load()
            chat = ChatTemplate(tok)
            template, why = ollama_template(chat)
            if template is None:
                print(f"{name}: no TEMPLATE ({why})")
                continue
            bos = tok.bos_token if tokenizer_adds_bos(tok) and tok.bos_token else ""
            same = 0
            for conv in CONVERSATIONS:
                messages = [{"role": r, "content": c} for r, c in conv]
                want = chat.render(messages, gen=True).removeprefix(bos)  # the engine adds that BOS
                if messages[0]["role"] != "system" and template.system:  # Ollama puts SYSTEM first
                    messages = [{"role": "system", "content": template.system}, *messages]
                got = subprocess.run(
                    [str(runner)],
                    input=json.dumps({"template": template.text, "messages": messages}),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                same += got == want
                if got != want:
                    print(f"{name}: differs on {conv}:\n  jinja {want!r}\n  go    {got!r}")
            failed += same != len(CONVERSATIONS)
            print(f"{name}: Go text/template writes what the Jinja template writes on {same}/{len(CONVERSATIONS)}")
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    print(f"({go})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
