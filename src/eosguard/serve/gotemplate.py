"""Go's `text/template`, parsed as Go parses it: the language of an Ollama Modelfile's `TEMPLATE`.

Ollama renders prompts with Go's `text/template` (github.com/ollama/ollama, `template/template.go`). This module
reads a template into Go's own node tree (`text/template/parse`: text, actions, `if` / `else if` / `else`,
`range` with `$i, $m :=`, `with`, `break`, `continue`, pipelines of fields, variables, literals, parenthesized
pipelines and function calls; `{{-` / `-}}` trim the whitespace beside them; comments vanish), with Go's parse
errors where Go refuses the text (an unclosed action, an undefined variable or function, `{{ end }}` missing).
`gotemplate_exec` runs the tree; `ollama_prompt` runs it the way Ollama does.

Two errors, never mixed up: `GoTemplateError` is what Go itself refuses (so Ollama refuses it too), `NotFollowed`
what this renderer does not follow (`define`, `template`, `block`, complex numbers): a check reading either never
passes.

    >>> parse('{{- range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}').nodes[0].pipe.cmds[0].args[0].ident
    ('Messages',)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eosguard.serve.gotemplate_lex import BUILTINS, OLLAMA_FUNCS, GoTemplateError, NotFollowed, Token, lex

# -- Go's parse tree (text/template/parse), the nodes Ollama's templates use ---------------------------------------


@dataclass
class Node:
    line: int = field(default=0, kw_only=True, compare=False)


@dataclass
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Text(Node):
    text: str


@dataclass
class Field(Node):
    ident: tuple[str, ...]


@dataclass
class Variable(Node):
    ident: tuple[str, ...]  # ("$x", "Field", ...)


@dataclass
class Dot(Node):
    pass


@dataclass
class Nil(Node):
    pass


@dataclass
class Literal(Node):
    """A bool, number or string constant."""

    value: object


@dataclass
class Identifier(Node):
    name: str  # a function


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[Command] = field(default_factory=list)


@dataclass
class Chain(Node):
    """`(pipeline).Field.Field`: fields read off an operand that is no field or variable."""

    node: Node
    fields: tuple[str, ...]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Branch(Node):
    """`if`, `range` or `with` (Go's IfNode, RangeNode and WithNode share BranchNode)."""

    kind: str
    pipe: Pipe
    list: ListNode
    else_list: ListNode | None = None


@dataclass
class Break(Node):
    pass


@dataclass
class Continue(Node):
    pass


# -- the parser ----------------------------------------------------------------------------------------------------


class _Parser:
    """Go's `parse.Tree`: the same grammar, errors and variable scopes."""

    def __init__(self, src: str, funcs: frozenset[str]) -> None:
        self.toks, self.at = lex(src), 0
        self.funcs = funcs
        self.vars = ["$"]
        self.range_depth = 0

    def next(self) -> Token:
        tok = self.toks[self.at]
        self.at += 1
        return tok

    def peek(self) -> Token:
        return self.toks[self.at]

    def next_non_space(self) -> Token:
        while self.peek().kind == "space":
            self.at += 1
        return self.next()

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        self.at -= 1
        return tok

    def expect(self, kind: str, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind != kind:
            raise GoTemplateError(f"unexpected {_show(tok)} in {context}", tok.line)
        return tok

    def parse(self) -> ListNode:
        root = ListNode(line=1)
        while self.peek().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                raise GoTemplateError(f"unexpected {node.word}", node.line)
            if node is not None:
                root.nodes.append(node)
        return root

    def item_list(self) -> tuple[ListNode, _End | _Else]:
        out = ListNode(line=self.peek().line)
        while self.peek().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return out, node
            if node is not None:
                out.nodes.append(node)
        raise GoTemplateError("unexpected EOF", self.peek().line)

    def text_or_action(self) -> Node | None:
        tok = self.next()
        if tok.kind == "text":
            return Text(tok.value, line=tok.line)
        if tok.kind == "left":
            return self.action()
        raise GoTemplateError(f"unexpected {_show(tok)} in input", tok.line)

    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == "keyword":
            word = tok.value
            if word in ("define", "template", "block"):
                raise NotFollowed(f"line {tok.line}: {{{{ {word} }}}} (named templates)")
            if word in ("if", "range", "with"):
                return self.control(word, tok.line)
            if word == "end":
                self.expect("right", "end")
                return _End("{{end}}", line=tok.line)
            if word == "else":
                nxt = self.peek_non_space()
                if nxt.kind == "keyword" and nxt.value in ("if", "with"):
                    return _Else("{{else}}", line=tok.line)  # `else if` / `else with`: the keyword stays pending
                self.expect("right", "else")
                return _Else("{{else}}", line=tok.line)
            if word in ("break", "continue"):
                self.expect("right", word)
                if not self.range_depth:
                    raise GoTemplateError(f"{{{{{word}}}}} outside {{{{range}}}}", tok.line)
                return Break(line=tok.line) if word == "break" else Continue(line=tok.line)
        self.at -= 1
        return Action(self.pipeline("command", "right"), line=tok.line)

    def control(self, kind: str, line: int) -> Branch:
        depth = len(self.vars)
        pipe = self.pipeline(kind, "right")
        self.range_depth += kind == "range"
        body, nxt = self.item_list()
        self.range_depth -= kind == "range"
        else_list = None
        if isinstance(nxt, _Else):
            follow = self.peek_non_space()
            if kind in ("if", "with") and follow.kind == "keyword" and follow.value == kind:
                self.next_non_space()
                else_list = ListNode([self.control(kind, follow.line)], line=follow.line)
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    raise GoTemplateError(f"expected end; found {end.word}", end.line)
        del self.vars[depth:]
        return Branch(kind, pipe, body, else_list, line=line)

    def pipeline(self, context: str, end: str) -> Pipe:
        pipe = Pipe(line=self.peek().line)
        while (v := self.peek_non_space()).kind == "variable":  # declarations: `$x :=`, `$x =`, `$i, $m :=`
            mark = self.at
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.kind in ("assign", "declare"):
                self.next_non_space()
                pipe.is_assign = nxt.kind == "assign"
                pipe.decl.append(v.value)
                self.vars.append(v.value)
                break
            if nxt.kind == ",":
                self.next_non_space()
                pipe.decl.append(v.value)
                self.vars.append(v.value)
                if context == "range" and len(pipe.decl) < 2 and self.peek_non_space().kind in ("variable", end):
                    continue
                raise GoTemplateError(f"too many declarations in {context}", v.line)
            self.at = mark  # `$x` is an operand
            break
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                if not pipe.cmds:
                    raise GoTemplateError(f"missing value for {context}", tok.line)
                for i, cmd in enumerate(pipe.cmds[1:]):
                    if isinstance(cmd.args[0], Literal | Dot | Nil):
                        raise GoTemplateError(f"non executable command in pipeline stage {i + 2}", cmd.line)
                return pipe
            if tok.kind in ("bool", "number", "string", "dot", "field", "ident", "variable", "(") or tok.value == "nil":
                self.at -= 1
                pipe.cmds.append(self.command())
            else:
                raise GoTemplateError(f"unexpected {_show(tok)} in {context}", tok.line)

    def command(self) -> Command:
        cmd = Command([], line=self.peek_non_space().line)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("right", ")"):
                self.at -= 1
            elif tok.kind != "pipe":
                raise GoTemplateError(f"unexpected {_show(tok)} in operand", tok.line)
            break
        if not cmd.args:
            raise GoTemplateError("empty command", cmd.line)
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        fields: list[str] = []
        while self.peek().kind == "field":
            fields.append(self.next().value[1:])
        if isinstance(node, Field | Variable):
            return type(node)((*node.ident, *fields), line=node.line)
        if isinstance(node, Literal | Nil | Dot):
            raise GoTemplateError("unexpected . after term", node.line)
        return Chain(node, tuple(fields), line=node.line)

    def term(self) -> Node | None:
        tok = self.next_non_space()
        line = tok.line
        if tok.kind == "ident":
            if tok.value not in self.funcs:
                raise GoTemplateError(f'function "{tok.value}" not defined', line)
            return Identifier(tok.value, line=line)
        if tok.kind == "dot":
            return Dot(line=line)
        if tok.value == "nil" and tok.kind == "keyword":
            return Nil(line=line)
        if tok.kind == "variable":
            if tok.value not in self.vars:
                raise GoTemplateError(f'undefined variable "{tok.value}"', line)
            return Variable((tok.value,), line=line)
        if tok.kind == "field":
            return Field((tok.value[1:],), line=line)
        if tok.kind in ("bool", "number", "string"):
            return Literal(tok.value == "true" if tok.kind == "bool" else tok.value, line=line)
        if tok.kind == "(":
            pipe = self.pipeline("parenthesized pipeline", ")")
            return pipe
        self.at -= 1
        return None


@dataclass
class _End(Node):
    word: str


@dataclass
class _Else(Node):
    word: str


def _show(tok: Token) -> str:
    return {"right": '"}}"', "eof": "EOF", "left": '"{{"'}.get(tok.kind, f"<{tok.value}>")


def parse(src: str, funcs: frozenset[str] = BUILTINS | OLLAMA_FUNCS) -> ListNode:
    """The template's tree, as `template.New("").Funcs(ollama's).Parse(src)` builds it; GoTemplateError where Go
    refuses it, NotFollowed for what this renderer does not follow."""
    return _Parser(src, funcs).parse()


def identifiers(node: object) -> list[str]:
    """The field and variable names a tree reads, walked as Ollama's `template.Identifiers` walks it (branch
    conditions included, parenthesized pipelines in, chains and declarations not)."""
    if isinstance(node, ListNode):
        return [name for n in node.nodes for name in identifiers(n)]
    if isinstance(node, Action):
        return identifiers(node.pipe)
    if isinstance(node, Branch):
        lists = [node.list, node.else_list] if node.else_list is not None else [node.list]
        return identifiers(node.pipe) + [name for each in lists for name in identifiers(each)]
    if isinstance(node, Pipe):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, Field | Variable):
        return list(node.ident)
    return []


__all__ = [
    "Action",
    "Branch",
    "Break",
    "Chain",
    "Command",
    "Continue",
    "Dot",
    "Field",
    "GoTemplateError",
    "Identifier",
    "ListNode",
    "Literal",
    "Nil",
    "NotFollowed",
    "Pipe",
    "Text",
    "Variable",
    "identifiers",
    "parse",
]
