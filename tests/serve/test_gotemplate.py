"""Go's text/template re-done in Python, run the way Ollama runs a Modelfile TEMPLATE.

The expected texts were written by Go's own text/template (go 1.19.8) through the runner of
benchmarks/go_template_check.py, which re-types Ollama's template.go; that benchmark holds the two equal on 812
cases, Ollama's own templates among them. The templates here are written after the structure of Ollama's
(template/*.gotmpl): ChatML, Llama-3's header form, Gemma's system merged into the first user turn, Mistral's
last-message test, and the legacy .System / .Prompt / .Response form.
"""

from __future__ import annotations

import pytest

from eosguard.serve.gotemplate import GoTemplateError, NotFollowed, parse
from eosguard.serve.ollama_choice import prefers_gguf_template, thinking_tags
from eosguard.serve.ollama_prompt import OllamaGoTemplate, ollama_prompt

CONVERSATION = [  # two system messages (collated into .System), then turns
    {"role": "system", "content": "S1"},
    {"role": "system", "content": "S2"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Yo"},
    {"role": "user", "content": "Q"},
]
M = "{{ range .Messages }}{{ end }}"  # reads .Messages: rendered once, on Ollama's .Messages data
CHATML_OUT = (
    "<|im_start|>system\nS1\n\nS2<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
)
TEMPLATES = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        CHATML_OUT,
    ),
    "llama3": (
        "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n{{- end }}\n"
        '{{- range .Messages }}\n{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
        "{{ .Content }}<|eot_id|>\n{{- end }}\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|start_header_id|>system<|end_header_id|>\n\nS1\n\nS2<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma": (
        '{{- $system := "" }}\n{{- range .Messages }}\n{{- if eq .Role "system" }}\n{{- if not $system }}'
        '{{ $system = .Content }}\n{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}\n{{- end }}\n'
        '{{- continue }}\n{{- else if eq .Role "user" }}<start_of_turn>user\n{{- if $system }}\n{{ $system }}\n'
        '{{- $system = "" }}\n{{- end }}\n{{- else if eq .Role "assistant" }}<start_of_turn>model\n{{- end }}\n'
        "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
        "<start_of_turn>user\nS1\n\nS2\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>user\n"
        "Q<end_of_turn>\n<start_of_turn>model\n",
    ),
    "mistral-last": (
        "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        '{{- if eq .Role "user" }}[INST] {{ if and $last $.System }}{{ $.System }}\n\n{{ end }}{{ .Content }}[/INST]\n'
        '{{- else if eq .Role "assistant" }} {{ .Content }}</s>\n{{- end }}\n{{- end }}',
        "[INST] Hi[/INST] Yo</s>[INST] S1\n\nS2\n\nQ[/INST]",
    ),
    "legacy": (  # no .Messages: rendered turn by turn, the last cut after {{ .Response }}
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
        "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
        CHATML_OUT,
    ),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_shaped_as_ollamas_render_as_go_renders_them(name):
    text, expected = TEMPLATES[name]
    template = OllamaGoTemplate(text)
    assert template.legacy == (name == "legacy")
    assert template.execute(CONVERSATION) == expected


def test_system_goes_first_only_when_the_request_has_none():
    template = OllamaGoTemplate(TEMPLATES["chatml"][0])
    user = [{"role": "user", "content": "Hi"}]
    assert ollama_prompt(template, "Be brief.", user).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    own = [{"role": "system", "content": "Mine"}, *user]
    assert "Be brief." not in ollama_prompt(template, "Be brief.", own)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ .Prompt }}", "HiYoQ"),  # {{ .Response }} appended; the last turn is cut after it
        ("[INST] {{ .Prompt }} [/INST] {{ .Response }} </s>", "[INST] Hi [/INST] Yo </s>[INST] Q [/INST] "),
        ("{{- /* c */ -}}\n  A  {{- .Prompt -}}  B\n{{/* x */}} C {{- 1 }} {{ 2 -}} \n D", "AHiB\n C1 2DYoAQB\n C1 2D"),
        ("{{ range .Messages }}{{ .Content }}{{ end }}{{ .Prompt }}", "S1\n\nS2HiYoQ<no value>"),  # no such key
        (
            M + '{{ and .System "y" }}|{{ or .Tools "z" }}|{{ not .Tools }}|{{ .Tools }}|{{ json .Tools }}',
            "y|z|true|null|null",
        ),
        (M + '{{ printf "%s=%d %q" "a" 3 "b" }} {{ print 1 2 "s" }} {{ len "é" }}', 'a=3 "b" 1 2s 2'),
        (
            '{{ range .Messages }}{{ if eq .Role "user" }}{{ . }}{{ end }}{{ end }}',
            "{user Hi  [] []  }{user Q  [] []  }",
        ),
        ('{{ range .Messages }}{{ if eq .Role "user" }}{{ break }}{{ end }}{{ .Role }},{{ end }}', "system,"),
    ],
)
def test_go_semantics_ollamas_templates_lean_on(text, expected):
    assert OllamaGoTemplate(text).execute(CONVERSATION) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ $x }}", 'line 1: undefined variable "$x"'),
        ("a\n{{ .Prompt ", "line 2: unclosed action"),
        ("{{ if .Prompt }}x", "unexpected EOF"),
        ("{{ upper .Prompt }}", 'function "upper" not defined'),
        ("{{ break }}", "{{break}} outside {{range}}"),
    ],
)
def test_what_go_refuses_to_parse_is_refused(text, error):
    with pytest.raises(GoTemplateError, match=error.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        parse(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ range .Messages }}{{ .Name }}{{ end }}", "can't evaluate field Name"),
        ("{{ range .Messages }}{{ if eq .Role 1 }}{{ end }}{{ end }}", "incompatible types"),
        ("{{ .Prompt }}{{ if .System }}{{ .Response }}{{ else }}x{{ end }}", "panics"),  # Ollama's legacy cut
        ("{{ json .Prompt }}{{ .Response }}", '"json" is not a defined function'),  # the cut copy has no funcs
    ],
)
def test_what_go_fails_to_execute_fails(text, error):
    with pytest.raises(GoTemplateError, match=error):
        OllamaGoTemplate(text).execute(CONVERSATION)


def test_what_the_renderer_does_not_follow_is_said_never_guessed():
    with pytest.raises(NotFollowed, match="named templates"):
        parse('{{ define "x" }}a{{ end }}{{ template "x" }}')
    with pytest.raises(NotFollowed, match="printf verb %x"):
        OllamaGoTemplate(M + '{{ printf "%x" 1 }}').execute(CONVERSATION)


def test_ollama_prefers_a_gguf_template_crediting_more_capabilities():
    plain = OllamaGoTemplate(TEMPLATES["chatml"][0])
    qwen_like = "{% if tools %}<tools>{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"
    assert "tools" in prefers_gguf_template(qwen_like, plain)  # the GGUF's template runs instead
    with_tools = OllamaGoTemplate("{{ if .Tools }}{{ json .Tools }}{{ end }}" + TEMPLATES["chatml"][0])
    assert prefers_gguf_template(qwen_like, with_tools) == ""  # the same capabilities: the TEMPLATE runs
    assert prefers_gguf_template("{% for m in messages %}{{ m.content }}{% endfor %}", plain) == ""
    thinking = OllamaGoTemplate(
        "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}"
    )
    assert thinking_tags(thinking.root) == ("<think>", "</think>")
