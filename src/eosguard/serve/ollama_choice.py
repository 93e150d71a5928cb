"""Which template Ollama 0.30+ prompts a GGUF model with: the Modelfile's `TEMPLATE`, or the GGUF's own chat template.

Since 0.30 (llama-server runs GGUF models), a model with a Go `TEMPLATE` is rendered with it unless its GGUF embeds
a chat template Ollama credits with more capabilities (server/images.go `shouldPreferChatTemplate`, with
`OLLAMA_GO_TEMPLATE` unset): the GGUF's template then runs in llama-server's Jinja instead. Ollama reads the
capabilities off the text: the GGUF's template supports tools when it says "tools" or "tool_call", thinking when it
writes `<think>` and `</think>`; the Go template supports tools when it reads `.Tools`, insertion when it reads
`.Suffix`, thinking when a `.Thinking` inside `range .Messages` sits between two texts (`thinking.InferTags`).
"""

from __future__ import annotations

from eosguard.serve.gotemplate import Action, Branch, Command, Field, ListNode, Node, Pipe, Text
from eosguard.serve.ollama_prompt import OllamaGoTemplate

_TOOL_ROLE = (
    "tool_response",
    "tool_results",
    "role'] == 'tool'",
    'role\'] == "tool"',
    "role\"] == 'tool'",
    'role"] == "tool"',
    "message.role == 'tool'",
    'message.role == "tool"',
    "ipython",
)


def _children(node: Node) -> list[Node]:
    if isinstance(node, ListNode):
        return list(node.nodes)
    if isinstance(node, Branch):
        return [node.pipe, node.list, *([node.else_list] if node.else_list is not None else [])]
    if isinstance(node, Action):
        return [node.pipe]
    if isinstance(node, Pipe):
        return list(node.cmds)
    if isinstance(node, Command):
        return list(node.args)
    return []


def thinking_tags(root: ListNode) -> tuple[str, str]:
    """Ollama's `thinking.InferTags`: the texts that open and close the list holding a `.Thinking` read inside
    `range .Messages` (the last such `.Thinking` wins), each stripped; ("", "") when there is none."""
    tags = ["", ""]

    def visit(node: Node, ancestors: list[Node]) -> None:
        chain = [*ancestors, node]
        if isinstance(node, Field) and node.ident[0] == "Thinking":
            ranges = [a for a in chain if isinstance(a, Branch) and a.kind == "range"]
            if ranges and _ranges_over(ranges[-1], "Messages"):
                holder = next(a for a in reversed(chain) if isinstance(a, ListNode))
                first, last = holder.nodes[0], holder.nodes[-1]
                tags[0] = first.text.strip() if isinstance(first, Text) else tags[0]
                tags[1] = last.text.strip() if isinstance(last, Text) else tags[1]
        for child in _children(node):
            visit(child, chain)

    visit(root, [])
    return tags[0], tags[1]


def _ranges_over(node: Branch, name: str) -> bool:
    found: list[bool] = []

    def visit(n: Node) -> None:
        found.append(isinstance(n, Field) and n.ident[0] == name)
        for child in _children(n):
            visit(child)

    visit(node.pipe)
    return any(found)


def _jinja_tools(text: str) -> bool:
    return "tools" in text or "tool_call" in text


def _jinja_capabilities(text: str) -> set[str]:
    caps = {"tools"} if _jinja_tools(text) else set()
    splits = "content.split('</think>')" in text or 'content.split("</think>")' in text
    if ("<think>" in text and "</think>" in text) or (
        splits and "reasoning_content" not in text and "<SPECIAL_12>" not in text
    ):
        caps.add("thinking")
    return caps


def _go_capabilities(template: OllamaGoTemplate) -> set[str]:
    caps = {cap for var, cap in (("tools", "tools"), ("suffix", "insert")) if var in template.vars}
    if all(thinking_tags(template.root)):
        caps.add("thinking")
    return caps


def _jinja_round_trip(text: str) -> bool:
    calls = "tool_calls" in text or "assistant_tool_call" in text
    return _jinja_tools(text) and calls and any(s in text for s in _TOOL_ROLE)


def _go_round_trip(template: OllamaGoTemplate) -> bool:
    if not {"tools", "toolcalls"} <= set(template.vars):
        return False
    return any(s in template.text for s in ('eq .Role "tool"', "tool_response", "TOOL_RESULTS"))


def prefers_gguf_template(gguf_template: str, template: OllamaGoTemplate) -> str:
    """Why Ollama 0.30+ (OLLAMA_GO_TEMPLATE unset) renders with the GGUF's own chat template instead of this
    TEMPLATE, or "" when it renders with the TEMPLATE (server/images.go `shouldPreferChatTemplate`)."""
    jinja, go = _jinja_capabilities(gguf_template), _go_capabilities(template)
    if len(jinja) > len(go):
        prefer = not _go_round_trip(template) or _jinja_round_trip(gguf_template)
    elif jinja != go or "tools" not in jinja:
        prefer = False
    else:
        prefer = _jinja_round_trip(gguf_template) and not _go_round_trip(template)
    if not prefer:
        return ""
    return (
        f"Ollama 0.30+ renders with the GGUF's own chat template instead (it credits that template with "
        f"{', '.join(sorted(jinja))} and the TEMPLATE with {', '.join(sorted(go)) or 'none'}; OLLAMA_GO_TEMPLATE=1 "
        "keeps the TEMPLATE)"
    )


__all__ = ["prefers_gguf_template", "thinking_tags"]
