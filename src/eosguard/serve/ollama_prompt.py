"""The prompt Ollama writes from a Modelfile's `TEMPLATE` and `SYSTEM`, and where it first parts from the trained
template's text.

Re-done in Python from Ollama's source (github.com/ollama/ollama, v0.33: `template/template.go`,
`server/routes.go`), over Go's `text/template` (`gotemplate`, `gotemplate_exec`):

- `template.Parse`: the template parsed with Ollama's functions (`json`, `currentDate`, ...) and
  `missingkey=zero`; one that reads neither `.Messages` nor `.Response` gets `{{ .Response }}` appended.
- the chat handler: the Modelfile's `SYSTEM` goes first as a system message when the request's first message is
  not one (`req.Messages[0].Role != "system" && m.System != ""`).
- `Template.Execute`: messages collated (consecutive ones of a role joined by a blank line, every system message's
  text joined into `.System`); a template that reads `.Messages` runs once on `System`, `Messages`, `Tools` (none),
  `Response` (""), `Think`, `ThinkLevel`, `IsThinkSet`; any other (the legacy `.System` / `.Prompt` /
  `.Response` form) runs turn by turn: once per (system, prompt, response) group, then a last time on a copy cut
  after the first `{{ .Response }}` action (Ollama's `deleteNode`), so the prompt ends where the reply begins.

`compare` renders probe conversations both ways: what Ollama writes, and what the trained Jinja template
writes for the same messages (the tokenizer's `apply_chat_template`, a BOS the engine adds when it tokenizes
left out, as llama.cpp adds it): the probe, the character and both texts around it where they part.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eosguard.chat.templates import ChatTemplate, TemplateError, common_prefix
from eosguard.chat.tokenizer_setup import tokenizer_adds_bos
from eosguard.serve.gotemplate import (
    Action,
    Branch,
    Command,
    Field,
    GoTemplateError,
    ListNode,
    Node,
    Pipe,
    identifiers,
    parse,
)
from eosguard.serve.gotemplate_exec import execute
from eosguard.serve.gotemplate_values import GoSlice, GoStruct, go_json

__all__ = [
    "Difference",
    "OllamaGoTemplate",
    "compare",
    "default_system",
    "ollama_prompt",
    "probe",
    "trained_text",
]


def _response_action() -> Action:
    return Action(Pipe(cmds=[Command([Field(("Response",))])]))


class OllamaGoTemplate:
    """A TEMPLATE as Ollama's `template.Parse` holds it (GoTemplateError where Go refuses the text)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root = parse(text)
        if not {"messages", "response"} & set(self.vars):
            self.root.nodes.append(_response_action())

    @cached_property
    def vars(self) -> list[str]:
        """The names it reads, lower-cased (Ollama's `Template.Vars`)."""
        return sorted({name.lower() for name in identifiers(self.root)})

    @property
    def legacy(self) -> bool:
        """Rendered turn by turn on `.System` / `.Prompt` / `.Response`, not once on `.Messages`."""
        return "messages" not in self.vars

    def execute(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt `Template.Execute` writes for these messages (no tools, no think option)."""
        system, collated = _collate(messages)
        flags = {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
        if not self.legacy:
            data = {
                "System": system,
                "Messages": GoSlice(_message(m) for m in collated),
                "Tools": GoSlice(stringer=go_json, nil=True),
                "Response": "",
                **flags,
            }
            return execute(self.root, data)
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}
        for m in collated:  # a system after a turn, or a user after a reply, renders the turn so far
            key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(m["role"])
            if key is None:
                continue
            if (key == "System" and (turn["Prompt"] or turn["Response"])) or (key == "Prompt" and turn["Response"]):
                out.append(execute(self.root, {**turn, **flags}))
                turn = dict.fromkeys(turn, "")
            turn[key] = m["content"]
        last = _cut_after_response(copy.deepcopy(self.root))  # a new template: no option, no Ollama functions
        out.append(execute(last, {**turn, **flags}, missing_zero=False, ollama_funcs=False))
        return "".join(out)


def _collate(messages: Iterable[Mapping[str, str]]) -> tuple[str, list[dict[str, str]]]:
    system: list[str] = []
    out: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"])
        if out and out[-1]["role"] == m["role"] and m["role"] != "tool":
            out[-1]["content"] += "\n\n" + m["content"]
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return "\n\n".join(system), out


def _message(m: Mapping[str, str]) -> GoStruct:
    """Ollama's `templateMessage` (a text message: no thinking, images or tool calls)."""
    return GoStruct(
        "*template.templateMessage",
        {
            "Role": m["role"],
            "Content": m["content"],
            "Thinking": "",
            "Images": GoSlice(nil=True),
            "ToolCalls": GoSlice(nil=True),
            "ToolName": "",
            "ToolCallID": "",
        },
    )


def _cut_after_response(root: ListNode) -> ListNode:
    """Ollama's `deleteNode`: every node walked after the first `.Response` field in an action is dropped (branch
    conditions are not walked); an `else` walked after it makes Ollama's walk convert nil and panic."""
    cut = False

    def hit(node: Node) -> bool:
        nonlocal cut
        if isinstance(node, Field) and "Response" in node.ident:
            cut = True
            return False
        return cut

    def walk(node: Node) -> Node | None:
        if hit(node):
            return None
        if isinstance(node, ListNode):
            node.nodes = [kept for child in node.nodes if (kept := walk(child)) is not None]
        elif isinstance(node, Branch):
            node.list = walk(node.list)
            if node.else_list is not None:
                node.else_list = walk(node.else_list)
                if node.else_list is None:
                    raise GoTemplateError(
                        "Ollama's legacy rendering panics on it: an {{ else }} after {{ .Response }} in a "
                        f"{{{{ {node.kind} }}}} (template.go deleteNode returns nil for it)",
                        node.line,
                    )
        elif isinstance(node, Action):
            pipe = walk(node.pipe)
            if pipe is None:
                return None
            node.pipe = pipe
        elif isinstance(node, Pipe):
            for cmd in node.cmds:
                cmd.args = [kept for arg in cmd.args if (kept := walk(arg)) is not None]
                if not cmd.args:
                    return None
        return node

    return walk(root)


def ollama_prompt(template: OllamaGoTemplate, system: str | None, messages: Sequence[Mapping[str, str]]) -> str:
    """What Ollama's chat endpoint renders for a request of these messages, the Modelfile's SYSTEM applied."""
    if messages and messages[0]["role"] != "system" and system:
        messages = [{"role": "system", "content": system}, *messages]
    return template.execute(messages)


def probe(roles: Sequence[str], salt: str, pad: str = "") -> list[dict[str, str]]:
    """A probe conversation: each message names its role and place, with a newline inside (and `pad` around)."""
    return [{"role": r, "content": f"{pad}{r} {salt}{i} says\nthis.{pad}"} for i, r in enumerate(roles)]


PROBES = (  # role sequences Ollama prompts with: the generation prompt follows a user turn
    ("user",),
    ("system", "user"),
    ("user", "assistant", "user"),
    ("system", "user", "assistant", "user", "assistant", "user"),
)


def trained_text(chat: ChatTemplate, messages: Sequence[Mapping[str, Any]], adds_bos: bool | None = None) -> str:
    """The trained template's text for a chat request (the generation prompt after it), less the BOS the
    tokenizer (and so llama.cpp, from the GGUF's `add_bos_token`) adds when it encodes the prompt."""
    text = chat.render(messages, gen=True)
    bos = chat.tokenizer.bos_token
    adds = tokenizer_adds_bos(chat.tokenizer) if adds_bos is None else adds_bos
    return text.removeprefix(bos) if adds and bos else text


@dataclass(frozen=True)
class Difference:
    """Where Ollama's prompt first parts from the trained template's text."""

    roles: tuple[str, ...]
    at: int
    ollama: str
    trained: str
    error: str = ""  # Go's execution error, where Ollama fails on the probe instead

    def describe(self, context: int = 40) -> str:
        roles = ", ".join(self.roles)
        if self.error:
            return f"on [{roles}] Ollama fails: {self.error}"
        lo = max(0, self.at - context)
        return (
            f"on [{roles}], at character {self.at}, Ollama writes {self.ollama[lo : self.at + context]!r} where the "
            f"trained template writes {self.trained[lo : self.at + context]!r}"
        )


def compare(
    chat: ChatTemplate,
    template: OllamaGoTemplate,
    system: str | None,
    probes: Iterable[Sequence[Mapping[str, str]]],
) -> tuple[list[Difference], int]:
    """Every probe on which Ollama's prompt is not the trained template's text, and how many probes were compared
    (one the trained template refuses, as a system message it does not take, is left out). The trained template
    gets the messages the model is given: SYSTEM first where Ollama puts it. `gotemplate.NotFollowed` propagates: a
    template this renderer cannot follow is never compared."""
    adds_bos = tokenizer_adds_bos(chat.tokenizer)
    found: list[Difference] = []
    compared = 0
    for messages in probes:
        sent = list(messages)
        if sent and sent[0]["role"] != "system" and system:
            sent = [{"role": "system", "content": system}, *sent]
        try:
            want = trained_text(chat, sent, adds_bos)
        except TemplateError:
            continue
        roles = tuple(m["role"] for m in messages)
        compared += 1
        try:
            got = ollama_prompt(template, system, messages)
        except GoTemplateError as exc:
            found.append(Difference(roles, 0, "", want, error=str(exc)))
            continue
        if got != want:
            found.append(Difference(roles, common_prefix(got, want), got, want))
    return found, compared


def default_system(chat: ChatTemplate) -> str | None:
    """The system message the trained template writes when a conversation brings none (SmolLM2's, Qwen2.5's), or
    None: its text for [user] read against its text for [system "§", user], which holds "§" where that goes.

    >>> from eosguard.testing.fixtures import smollm2_tokenizer
    >>> default_system(ChatTemplate(smollm2_tokenizer()))
    'You are a helpful AI assistant named SmolLM, trained by Hugging Face'
    """
    user = probe(("user",), "d")
    try:
        alone = chat.render(user, gen=True)
        marked = chat.render([{"role": "system", "content": "\u00a7"}, *user], gen=True)
    except TemplateError:
        return None
    before, _, after = marked.partition("\u00a7")
    if len(alone) <= len(before) + len(after) or not (alone.startswith(before) and alone.endswith(after)):
        return None
    return alone[len(before) : len(alone) - len(after)]
