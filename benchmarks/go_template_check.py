"""eosguard's Go template renderer held to Go's own `text/template`, and the TEMPLATEs `export gguf --ollama` writes
held to the Jinja templates: outside CI (needs Go).

1. Python = Go. A Go program (`RUNNER`, built here with `go build`) renders prompts as Ollama does: Go's
   `text/template` with Ollama's functions and `missingkey=zero`, `{{ .Response }}` appended to a template that
   reads neither `.Messages` nor `.Response`, the Modelfile's SYSTEM first when a request starts with no system
   message, messages collated, and the legacy `.System` / `.Prompt` / `.Response` path turn by turn with its cut
   after `{{ .Response }}` (Ollama's `template/template.go` and `server/routes.go`, v0.33, re-typed for Go 1.19).
   `eosguard.serve.ollama_prompt` renders the same templates, SYSTEMs and conversations; each case is the same
   text, both refuse (Go's error, eosguard's GoTemplateError), or a failure (a difference, or eosguard's renderer
   not following what Go runs). The templates: eosguard's own cases (`CASES`: legacy forms, trim markers,
   variables, functions, missing keys, errors), the TEMPLATEs eosguard exports, and with `--ollama DIR` every
   `template/*.gotmpl` of an Ollama checkout, whose rendering is also held to Ollama's own `testdata` outputs.
2. Go = Jinja. The exported TEMPLATEs (SmolLM2, ChatML, Phi-3, TRL's lfm2 and phi3_5, Qwen2.5, Llama-3, Gemma)
   run by Go on conversations, against the Jinja template's text (the BOS the engine adds left out); a family
   for which the export writes no TEMPLATE is counted apart, as "no TEMPLATE", never as a success.

Exit 1 on any failure. Writes `benchmarks/results/go_template.json`.

Run as:
    apt-get install -y golang-go      # Debian: go 1.19
    git clone https://github.com/ollama/ollama /tmp/ollama   # optional: Ollama's own templates
    python benchmarks/go_template_check.py --ollama /tmp/ollama
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eosguard.chat.templates import ChatTemplate
from eosguard.serve.gotemplate import GoTemplateError, NotFollowed
from eosguard.serve.modelfile import ollama_template
from eosguard.serve.ollama_prompt import PROBES, OllamaGoTemplate, compare, ollama_prompt, probe, trained_text
from eosguard.testing.fixtures import family_tokenizer, smollm2_tokenizer, trl_tokenizer

RUNNER = r"""package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type templateTools []map[string]any

func (t templateTools) String() string { b, _ := json.Marshal(t); return string(b) }

type toolCall struct {
	ID       string
	Function struct {
		Index     int
		Name      string
		Arguments map[string]any
	}
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []toolCall
	ToolName   string
	ToolCallID string
}

var funcs = template.FuncMap{
	"json":             func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" },
}

var response = parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{NodeType: parse.NodePipe,
	Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Args: []parse.Node{
		&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}}}}}}

// identifiers walks a tree as Ollama's template.Identifiers does.
func identifiers(n parse.Node) []string {
	var names []string
	switch n := n.(type) {
	case *parse.ListNode:
		for _, c := range n.Nodes {
			names = append(names, identifiers(c)...)
		}
	case *parse.ActionNode:
		names = identifiers(n.Pipe)
	case *parse.IfNode:
		names = identifiers(&n.BranchNode)
	case *parse.RangeNode:
		names = identifiers(&n.BranchNode)
	case *parse.WithNode:
		names = identifiers(&n.BranchNode)
	case *parse.BranchNode:
		names = identifiers(n.Pipe)
		names = append(names, identifiers(n.List)...)
		if n.ElseList != nil {
			names = append(names, identifiers(n.ElseList)...)
		}
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				names = append(names, identifiers(a)...)
			}
		}
	case *parse.FieldNode:
		names = n.Ident
	case *parse.VariableNode:
		names = n.Ident
	}
	return names
}

func reads(t *template.Template, name string) bool {
	for _, v := range identifiers(t.Tree.Root) {
		if strings.ToLower(v) == name {
			return true
		}
	}
	return false
}

// cut drops every node walked after the first .Response field, as Ollama's deleteNode does.
func cut(n parse.Node) parse.Node {
	done := false
	hit := func(n parse.Node) bool {
		if f, ok := n.(*parse.FieldNode); ok {
			for _, id := range f.Ident {
				if id == "Response" {
					done = true
					return false
				}
			}
		}
		return done
	}
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if hit(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var kept []parse.Node
			for _, c := range t.Nodes {
				if k := walk(c); k != nil {
					kept = append(kept, k)
				}
			}
			t.Nodes = kept
			return t
		case *parse.IfNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.WithNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.RangeNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			p := walk(t.Pipe)
			if p == nil {
				return nil
			}
			t.Pipe = p.(*parse.PipeNode)
		case *parse.PipeNode:
			var cmds []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if k := walk(a); k != nil {
						args = append(args, k)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				cmds = append(cmds, c)
			}
			if len(cmds) == 0 {
				return nil
			}
			t.Cmds = cmds
		}
		return n
	}
	return walk(n)
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func render(text, system string, msgs []message) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return "", err
	}
	if !reads(t, "messages") && !reads(t, "response") {
		t.Tree.Root.Nodes = append(t.Tree.Root.Nodes, &response)
	}
	if len(msgs) > 0 && msgs[0].Role != "system" && system != "" {
		msgs = append([]message{{"system", system}}, msgs...)
	}
	var systems []string
	var collated []*templateMessage
	for _, m := range msgs {
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == m.Role && m.Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, &templateMessage{Role: m.Role, Content: m.Content})
		}
	}
	flags := map[string]any{"Think": false, "ThinkLevel": "", "IsThinkSet": false}
	with := func(d map[string]any) map[string]any {
		for k, v := range flags {
			d[k] = v
		}
		return d
	}
	var b bytes.Buffer
	if reads(t, "messages") {
		var tools templateTools
		err = t.Execute(&b, with(map[string]any{"System": strings.Join(systems, "\n\n"), "Messages": collated,
			"Tools": tools, "Response": ""}))
		return b.String(), err
	}
	var sys, prompt, resp string
	run := func() error {
		err := t.Execute(&b, with(map[string]any{"System": sys, "Prompt": prompt, "Response": resp}))
		sys, prompt, resp = "", "", ""
		return err
	}
	for _, m := range collated {
		switch m.Role {
		case "system":
			if prompt != "" || resp != "" {
				if err := run(); err != nil {
					return b.String(), err
				}
			}
			sys = m.Content
		case "user":
			if resp != "" {
				if err := run(); err != nil {
					return b.String(), err
				}
			}
			prompt = m.Content
		case "assistant":
			resp = m.Content
		}
	}
	tree := parse.Tree{Root: cut(t.Tree.Root.Copy()).(*parse.ListNode)}
	last := template.Must(template.New("").AddParseTree("", &tree))
	err = last.Execute(&b, with(map[string]any{"System": sys, "Prompt": prompt, "Response": resp}))
	return b.String(), err
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c struct {
			Template string    `json:"template"`
			System   string    `json:"system"`
			Messages []message `json:"messages"`
		}
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			panic(err)
		}
		text, err := render(c.Template, c.System, c.Messages)
		res := map[string]any{"out": text}
		if err != nil {
			res["error"] = err.Error()
		}
		out.Encode(res)
	}
}
"""

CONVERSATIONS = [
    [("user", "Hi there")],
    [("system", "Be brief."), ("user", "What is 2+2?")],
    [("user", "  spaced  "), ("assistant", "\nFour.\n"), ("user", "And 3+3?")],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e")],
    [("user", "one"), ("user", "two"), ("assistant", "merged"), ("user", "three")],  # collated
    [("system", "first"), ("user", "u"), ("assistant", "a"), ("system", "again"), ("user", "v")],  # a later system
    [("user", '<b>&"q" é 😀 {{ not a template }}\t\n')],
]
SYSTEMS = ["", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"]

# eosguard's cases: each a feature of Go's text/template or of Ollama's rendering (Go refusing some is the point)
CASES = {
    "prompt only (legacy, Response appended)": "{{ .Prompt }}",
    "legacy ChatML": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
    "legacy, Response mid-text": "[INST] {{ .System }} {{ .Prompt }} [/INST] {{ .Response }} </s>",
    "legacy, Response in an if with else (Ollama panics)": "{{ .Prompt }}{{ if .System }}{{ .Response }}"
    "{{ else }}x{{ end }}",
    "legacy, Response in an if": "{{ .Prompt }}{{ if .Prompt }}A: {{ .Response }} end{{ end }} after",
    "legacy calling json before Response": '{{ json .Prompt }}{{ .Response }}{{ json "x" }}',
    "legacy reading .Tools": "{{ if .Tools }}T{{ end }}{{ .Tools }}|{{ .Prompt }}",
    "Messages + .Prompt (no value)": "{{ range .Messages }}{{ .Content }}{{ end }}{{ .Prompt }}|{{ .Nope }}",
    "ChatML with SYSTEM from .System": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{ range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    "{{ end }}<|im_start|>assistant\n",
    "trim markers and comments": "{{- /* c */ -}}\n  A  {{- .System -}}  B\n{{/* x */}} C {{- 1 }} {{ 2 -}} \n D",
    "variables and scopes": '{{- $s := "" }}{{ range $i, $m := .Messages }}{{ if eq $i 0 }}{{ $s = $m.Role }}'
    "{{ end }}{{ $t := $i }}{{ $t }}{{ end }}[{{ $s }}]{{ with $x := .System }}{{ $x }}{{ else }}none{{ end }}",
    "last message by slice": "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    "{{ if $last }}LAST {{ end }}{{ .Role }};{{ end }}{{ (index .Messages 0).Role }}",
    "break and continue": '{{ range .Messages }}{{ if eq .Role "system" }}{{ continue }}{{ end }}'
    '{{ if eq .Role "assistant" }}{{ break }}{{ end }}{{ .Content }}|{{ end }}',
    "range else, with": "{{ range .Tools }}tool{{ else }}no tools{{ end }}{{ with .Tools }}x{{ else }}-{{ end }}",
    "and / or / not": '{{ and .System "yes" }}|{{ or .Tools .System "z" }}|{{ not .Tools }}|{{ or 0 "" }}',
    "printf, print, println": '{{ printf "%s=%d %q %v" "a" 3 "q\\"x" true }}{{ print 1 2 "s" 3 }}{{ println "a" 1 }}',
    "comparisons": '{{ lt 1 2 }}{{ le 2 2 }}{{ gt 1 2 }}{{ ge 1 2 }}{{ eq .System "" }}{{ ne 1 2 }}',
    "json and the message fields": "{{ json .Messages }}{{ json .Tools }}{{ range .Messages }}{{ .Images }}"
    "{{ .ToolCalls }}{{ .Thinking }}{{ end }}{{ .Think }}{{ .IsThinkSet }}",
    "len counts bytes": "{{ range .Messages }}{{ len .Content }},{{ end }}{{ len .System }}",
    "string literals": "{{ \"a\\tb\\u00e9\\n\" }}{{ `raw\\n` }}{{ 'x' }}{{ 0x1F }}{{ 1.5 }}",
    "eq on a missing key": '{{ if eq .Nope "x" }}y{{ else }}n{{ end }}{{ if .Nope }}t{{ end }}',
    "Llama-3 shape": "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n"
    '{{- end }}{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>'
    "\n\n{{ .Content }}<|eot_id|>{{ end }}\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    "Gemma shape (system into the first user turn)": '{{- $system := "" }}{{- range .Messages }}'
    '{{- if eq .Role "system" }}{{ $system = .Content }}{{- continue }}{{- else if eq .Role "user" }}'
    '<start_of_turn>user\n{{- if $system }}\n{{ $system }}{{- $system = "" }}{{- end }}'
    '{{- else if eq .Role "assistant" }}<start_of_turn>model{{- end }}\n{{ .Content }}<end_of_turn>\n{{ end }}'
    "<start_of_turn>model\n",
    "LLaMA-Factory qwen on SmolLM2": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant'
    '\n{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}',
    "printing a message": '{{ range .Messages }}{{ if eq .Role "user" }}{{ . }}{{ end }}{{ end }}',
    "if declaring a variable, nested ranges": "{{ if $s := .System }}[{{ $s }}]{{ end }}{{ range $i, $m := .Messages }}"
    "{{ range $.Messages }}{{ $i }}{{ end }}{{ end }}",
    "else with trim markers": '{{ range .Messages }}{{ if eq .Role "user" -}}\n  U  \n{{- else -}}\n  O  \n{{- end }}'
    "{{ end }}",
    "with on a message": "{{ with index .Messages 0 }}{{ .Role }}{{ end }}{{ with $.System }}{{ . }}{{ end }}",
    "error: undefined variable": "{{ $x }}",
    "error: unclosed action": "{{ .Prompt ",
    "error: no end": "{{ if .Prompt }}x",
    "error: undefined function": "{{ upper .Prompt }}",
    "error: field of a message": "{{ range .Messages }}{{ .Name }}{{ end }}",
    "error: index out of range": "{{ (index .Messages 5).Role }}",
    "error: break outside range": "{{ break }}",
    "error: len of a missing key": "{{ range .Messages }}{{ end }}{{ len .Nope }}",
    "error: comparing a string and a number": "{{ range .Messages }}{{ if eq .Role 1 }}{{ end }}{{ end }}",
}


def build(folder: Path) -> Path:
    (folder / "main.go").write_text(RUNNER)
    subprocess.run(["go", "mod", "init", "gocheck"], cwd=folder, check=True, capture_output=True)
    subprocess.run(["go", "build", "-o", "gocheck", "."], cwd=folder, check=True, capture_output=True)
    return folder / "gocheck"


def run_go(runner: Path, cases: list[dict[str, Any]]) -> list[dict[str, str]]:
    lines = "".join(json.dumps(c) + "\n" for c in cases)
    done = subprocess.run([str(runner)], input=lines, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def run_python(case: dict[str, Any]) -> dict[str, str]:
    try:
        return {"out": ollama_prompt(OllamaGoTemplate(case["template"]), case["system"], case["messages"])}
    except GoTemplateError as exc:
        return {"error": str(exc)}
    except NotFollowed as exc:
        return {"not_followed": str(exc)}


def messages(conv: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in conv]


def exported() -> dict[str, tuple[ChatTemplate, Any, str]]:
    loads = {
        "SmolLM2 (shipped)": smollm2_tokenizer,
        "ChatML": lambda: family_tokenizer("chatml"),
        "Phi-3": lambda: family_tokenizer("phi3"),
        "TRL lfm2": lambda: trl_tokenizer("lfm2"),
        "TRL phi3_5": lambda: trl_tokenizer("phi3_5"),
        "Qwen2.5": lambda: family_tokenizer("qwen2.5"),
        "Llama-3": lambda: family_tokenizer("llama3"),
        "Gemma": lambda: family_tokenizer("gemma"),
    }
    out = {}
    for name, load in loads.items():
        chat = ChatTemplate(load())
        template, why = ollama_template(chat)
        out[name] = (chat, template, why)
    return out


def python_equals_go(runner: Path, templates: dict[str, str], expected: dict[str, dict[str, str]]) -> dict:
    cases = [
        {"name": name, "template": text, "system": system, "messages": messages(conv)}
        for name, text in templates.items()
        for system in SYSTEMS
        for conv in CONVERSATIONS
    ]
    go = run_go(runner, [{k: c[k] for k in ("template", "system", "messages")} for c in cases])
    tally = {"same text": 0, "both refuse": 0, "differ": 0, "not followed": 0}
    failures = []
    for case, want in zip(cases, go, strict=True):
        got = run_python(case)
        if "not_followed" in got:
            tally["not followed"] += 1
            failures.append({"template": case["name"], "not_followed": got["not_followed"]})
        elif "error" in got or "error" in want:
            same = "error" in got and "error" in want
            tally["both refuse" if same else "differ"] += 1
            if not same:
                failures.append({"template": case["name"], "messages": case["messages"], "go": want, "python": got})
        elif got["out"] == want["out"]:
            tally["same text"] += 1
        else:
            tally["differ"] += 1
            failures.append({"template": case["name"], "messages": case["messages"], "go": want, "python": got})
    testdata = {"same": 0, "differ": 0}
    for key, want in expected.items():  # Ollama's own expected outputs (its tests trim one trailing space)
        name, conv = key.split("|")
        case = {"template": templates[name], "system": "", "messages": messages(TESTDATA[conv])}
        out = run_go(runner, [case])[0].get("out", "")
        same = out == want or (out.endswith(" ") and out[:-1] == want)
        testdata["same" if same else "differ"] += 1
        if not same:
            failures.append({"template": name, "testdata": conv, "go": out, "ollama": want})
    return {"cases": len(cases), **tally, "ollama_testdata": testdata, "failures": failures}


TESTDATA = {  # the conversations of Ollama's template_test.go
    "user": [("user", "Hello, how are you?")],
    "user-assistant-user": [
        ("user", "Hello, how are you?"),
        ("assistant", "I'm doing great. How can I help you today?"),
        ("user", "I'd like to show off how chat templating works!"),
    ],
    "system-user-assistant-user": [
        ("system", "You are a helpful assistant."),
        ("user", "Hello, how are you?"),
        ("assistant", "I'm doing great. How can I help you today?"),
        ("user", "I'd like to show off how chat templating works!"),
    ],
}


def ollama_templates(folder: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Ollama's `template/*.gotmpl` (line endings normalised as Ollama does) and its expected outputs."""
    if folder is None:
        return {}, {}
    found = sorted((folder / "template").glob("*.gotmpl"))
    templates = {f"ollama {p.name}": p.read_text().replace("\r\n", "\n") for p in found}
    expected = {
        f"ollama {p.name}|{conv}": (p.parent / "testdata" / p.name / conv).read_text()
        for p in found
        for conv in TESTDATA
        if (p.parent / "testdata" / p.name / conv).is_file()
    }
    return templates, expected


def go_equals_jinja(runner: Path, exports: dict[str, tuple[ChatTemplate, Any, str]]) -> dict:
    rows = {}
    for name, (chat, template, why) in exports.items():
        if template is None:
            rows[name] = {"result": "no TEMPLATE", "why": why}
            continue
        cases = [
            {"template": template.text, "system": template.system or "", "messages": messages(c)}
            for c in CONVERSATIONS[:4]
        ]
        outs = run_go(runner, cases)
        same = 0
        for conv, case, out in zip(CONVERSATIONS[:4], cases, outs, strict=True):
            sent = case["messages"]
            if template.system and sent[0]["role"] != "system":
                sent = [{"role": "system", "content": template.system}, *sent]
            want = trained_text(chat, sent)
            same += out.get("out") == want
            if out.get("out") != want:
                print(f"{name}: differs on {conv}:\n  jinja {want!r}\n  go    {out!r}")
        rows[name] = {"result": f"{same}/{len(cases)}", "same": same, "of": len(cases)}
    return rows


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
DOCTOR = {  # SmolLM2's Modelfiles the doctor judges: (TEMPLATE, SYSTEM, whether Ollama writes the trained text)
    "ChatML, SmolLM2's own system message dropped": (CHATML, "", False),
    "ChatML + SYSTEM (its twin)": (CHATML, SMOLLM2_SYSTEM, True),
    "legacy ChatML + SYSTEM": (CASES["legacy ChatML"], SMOLLM2_SYSTEM, True),
    "legacy {{ .Prompt }}": (CASES["prompt only (legacy, Response appended)"], "", False),
    "LLaMA-Factory qwen + its SYSTEM": (
        CASES["LLaMA-Factory qwen on SmolLM2"],
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        True,
    ),
}


def doctor_cases(runner: Path) -> dict:
    """Go's rendering of each DOCTOR Modelfile on the doctor's probes against SmolLM2's trained text, beside the
    doctor's own verdict (`ollama_prompt.compare`): both must say what DOCTOR says."""
    chat = ChatTemplate(smollm2_tokenizer())
    probes = [probe(roles, "a") for roles in PROBES]
    rows = {}
    for name, (text, system, expected) in DOCTOR.items():
        outs = run_go(runner, [{"template": text, "system": system, "messages": p} for p in probes])
        go_same = 0
        for messages, out in zip(probes, outs, strict=True):
            sent = (
                messages
                if messages[0]["role"] == "system" or not system
                else [{"role": "system", "content": system}, *messages]
            )
            go_same += out.get("out") == trained_text(chat, sent)
        differences, compared = compare(chat, OllamaGoTemplate(text), system or None, probes)
        rows[name] = {
            "go_writes_the_trained_text": f"{go_same}/{len(probes)}",
            "doctor_passes": not differences,
            "as_expected": (go_same == len(probes)) == expected == (not differences) and compared == len(probes),
        }
    return rows


def _cpu() -> str:
    """The CPU's model name and whether it has avx512_bf16 (lscpu)."""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Model name")), "")
    return f"{name}, avx512_bf16 {'yes' if 'avx512_bf16' in info else 'no'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ollama", type=Path, help="an Ollama checkout: hold its template/*.gotmpl too")
    parser.add_argument("--ollama-rev", default="", help="the commit of that checkout, for the record")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "go_template.json")
    args = parser.parse_args()
    if shutil.which("go") is None:
        print("skipped: no `go` on PATH (Debian: apt-get install golang-go)")
        return 2
    start = time.time()
    exports = exported()
    theirs, expected = ollama_templates(args.ollama)
    ours = {f"export {n}": t.text for n, (_, t, _) in exports.items() if t is not None}
    with tempfile.TemporaryDirectory() as tmp:
        runner = build(Path(tmp))
        equal = python_equals_go(runner, {**CASES, **ours, **theirs}, expected)
        jinja = go_equals_jinja(runner, exports)
        judged = doctor_cases(runner)
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    failed = equal["differ"] + equal["not followed"] + equal["ollama_testdata"]["differ"]
    failed += sum(r.get("of", 0) - r.get("same", 0) for r in jinja.values())
    failed += sum(not r["as_expected"] for r in judged.values())
    result = {
        "versions": {
            "date": time.strftime("%Y-%m-%d"),
            "go": go,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "cpu": _cpu(),
            "ollama_templates": len(theirs),
            "ollama_rev": args.ollama_rev,
        },
        "python_equals_go": equal,
        "go_equals_jinja": jinja,
        "doctor_on_smollm2": judged,
        "seconds": round(time.time() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(
        f"Python = Go: {equal['same text']} same text, {equal['both refuse']} both refuse, {equal['differ']} "
        f"differ, {equal['not followed']} not followed, of {equal['cases']} ({len(theirs)} Ollama templates); "
        f"Ollama's testdata: {equal['ollama_testdata']}"
    )
    for name, row in jinja.items():
        print(f"export {name}: {row['result']}" + (f" ({row['why']})" if "why" in row else ""))
    for name, row in judged.items():
        print(
            f"doctor, SmolLM2, {name}: Go writes the trained text on {row['go_writes_the_trained_text']} probes; "
            f"doctor {'passes' if row['doctor_passes'] else 'reports drift'}; as expected: {row['as_expected']}"
        )
    for failure in equal["failures"][:10]:
        print("FAILED", json.dumps(failure, ensure_ascii=False)[:600])
    print(f"({go}; {result['seconds']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
