"""A `gotemplate` tree executed as Go's `text/template` executes it (`exec.go`), on data shaped as Ollama's.

Truth, `eq`, printing (`<no value>` for a missing key), variable scopes (`$x :=` lives to the `end` of its control
structure, `$x =` assigns the nearest, a range's `$i, $m` are set on each turn), `break` / `continue`, `and` / `or`
short-circuiting and Go's checks on function arguments (no value where a function wants one is an error) are Go's;
values and functions are in `gotemplate_values`.
"""

from __future__ import annotations

from typing import Any

from eosguard.serve.gotemplate import (
    OLLAMA_FUNCS,
    Action,
    Branch,
    Break,
    Chain,
    Command,
    Continue,
    Dot,
    Field,
    GoTemplateError,
    Identifier,
    ListNode,
    Literal,
    Nil,
    Node,
    NotFollowed,
    Pipe,
    Text,
    Variable,
)
from eosguard.serve.gotemplate_values import (
    ANY_TYPED,
    ARITY,
    FUNCS,
    INVALID,
    NIL,
    NO_FINAL,
    VARIADIC,
    GoStruct,
    go_string,
    truth,
)


class _Jump(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class Execution:
    """One `Execute`: the output, the variable stack, the missing-key option (`missingkey=zero` or Go's default)."""

    def __init__(self, data: Any, missing_zero: bool = True, ollama_funcs: bool = True) -> None:
        self.out: list[str] = []
        self.ollama_funcs = ollama_funcs
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.missing = NIL if missing_zero else INVALID

    def run(self, root: ListNode) -> str:
        try:
            self.walk(self.vars[0][1], root)
        except RecursionError:
            raise NotFollowed("a template nested too deep") from None
        return "".join(self.out)

    # -- statements ------------------------------------------------------------------------------------------------

    def walk(self, dot: Any, node: Node) -> None:
        if isinstance(node, Text):
            self.out.append(node.text)
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append(go_string(value))
        elif isinstance(node, Branch):
            (self.range if node.kind == "range" else self.if_or_with)(dot, node)
        elif isinstance(node, Break | Continue):
            raise _Jump("break" if isinstance(node, Break) else "continue")
        else:
            raise NotFollowed(f"a {type(node).__name__} node")

    def if_or_with(self, dot: Any, node: Branch) -> None:
        mark = len(self.vars)
        value = self.pipeline(dot, node.pipe)
        if truth(value):
            self.walk(value if node.kind == "with" else dot, node.list)
        elif node.else_list is not None:
            self.walk(dot, node.else_list)
        del self.vars[mark:]

    def range(self, dot: Any, node: Branch) -> None:
        outer = len(self.vars)
        value = self.pipeline(dot, node.pipe)
        if isinstance(value, dict):
            pairs = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]  # Go 1.22+
        elif value is INVALID:
            pairs = []
        else:
            raise GoTemplateError(f"range can't iterate over {go_string(value)}", node.line)
        mark = len(self.vars)
        try:
            for index, elem in pairs:
                decl = node.pipe.decl
                if decl:  # with two variables the index comes first; `=` assigns them, `:=` set the pushed ones
                    first, second = (index, elem) if len(decl) > 1 else (elem, None)
                    names = decl if node.pipe.is_assign else None
                    self.set_var(names[0] if names else None, first, top=len(decl))
                    if len(decl) > 1:
                        self.set_var(names[1] if names else None, second, top=1)
                try:
                    self.walk(elem, node.list)
                except _Jump as jump:
                    if jump.kind == "break":
                        raise
                finally:
                    del self.vars[mark:]
        except _Jump:
            pass
        else:
            if not pairs and node.else_list is not None:
                self.walk(dot, node.else_list)
        del self.vars[outer:]

    def set_var(self, name: str | None, value: Any, top: int = 1) -> None:
        """`$x = value` (the nearest `$x`), or, with no name, the `top`-th variable from the stack's top."""
        if name is None:
            self.vars[-top] = (self.vars[-top][0], value)
            return
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise GoTemplateError(f"undefined variable: {name}")

    # -- expressions -----------------------------------------------------------------------------------------------

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
            if value is NIL:  # an interface{} is dug into: a nil one is no value
                value = INVALID
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, cmd: Command, final: Any) -> Any:
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, Identifier):
            return self.call(dot, first.name, args, final)
        if isinstance(first, Field | Variable | Chain):
            if args or final is not NO_FINAL:
                raise GoTemplateError(f"{first} has arguments but cannot be invoked as function", cmd.line)
            return self.operand(dot, first)
        if args or final is not NO_FINAL:
            raise GoTemplateError("can't give argument to non-function", cmd.line)
        if isinstance(first, Nil):
            raise GoTemplateError("nil is not a command", cmd.line)
        return self.operand(dot, first)

    def operand(self, dot: Any, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return NIL
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, Identifier):
            return self.call(dot, node.name, [], NO_FINAL)
        if isinstance(node, Field):
            return self.fields(dot, node.ident, node.line)
        if isinstance(node, Variable):
            value = self.var(node.ident[0], node.line)
            return self.fields(value, node.ident[1:], node.line)
        if isinstance(node, Chain):
            return self.fields(self.operand(dot, node.node), node.fields, node.line)
        raise NotFollowed(f"a {type(node).__name__} operand")

    def var(self, name: str, line: int) -> Any:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        raise GoTemplateError(f"undefined variable: {name}", line)

    def fields(self, value: Any, names: tuple[str, ...], line: int) -> Any:
        for name in names:
            if value is INVALID:
                return INVALID
            if value is NIL or value is None:
                raise GoTemplateError(f"nil pointer evaluating interface {{}}.{name}", line)
            if isinstance(value, dict):
                value = value.get(name, self.missing)
            elif isinstance(value, GoStruct) and name in value.fields:
                value = value.fields[name]
            else:
                kind = value.type if isinstance(value, GoStruct) else type(value).__name__
                raise GoTemplateError(f"can't evaluate field {name} in type {kind}", line)
        return value

    def call(self, dot: Any, name: str, args: list[Node], final: Any) -> Any:
        if name in OLLAMA_FUNCS and not self.ollama_funcs:
            raise GoTemplateError(f'"{name}" is not a defined function')
        if name in ("and", "or"):  # short-circuit: the first false (and) or true (or) argument, else the last
            if not args and final is NO_FINAL:
                raise GoTemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            value = None
            for arg in args:
                value = self.argument(dot, arg, name)
                if truth(value) == (name == "or"):
                    return value
            return self.checked(final, name) if final is not NO_FINAL else value
        values = [self.argument(dot, arg, name) for arg in args]
        if final is not NO_FINAL:
            values.append(self.checked(final, name))
        want = ARITY.get(name)
        if (want is not None and len(values) != want) or (not values and name not in VARIADIC):
            raise GoTemplateError(f"wrong number of args for {name}: want {want or 'more'} got {len(values)}")
        return FUNCS[name](*values)

    def argument(self, dot: Any, node: Node, func: str) -> Any:
        if isinstance(node, Nil):
            if func in ANY_TYPED:
                return NIL
            raise GoTemplateError(f"cannot assign nil to the arguments of {func}", node.line)
        return self.checked(self.operand(dot, node), func)

    @staticmethod
    def checked(value: Any, func: str) -> Any:
        """Go's validateType: no value reaches a parameter of type any as nil, a builtin's reflect.Value parameter as
        no value (a typed parameter, printf's format or currentDate's, refuses it in the function)."""
        return NIL if value is INVALID and func in ANY_TYPED else value


def execute(root: ListNode, data: Any, missing_zero: bool = True, ollama_funcs: bool = True) -> str:
    """The text Go writes for `root` on `data` (GoTemplateError where Go's execution fails): `missing_zero` is the
    option `missingkey=zero`, `ollama_funcs` whether Ollama's functions are defined on the template."""
    return Execution(data, missing_zero, ollama_funcs).run(root)


__all__ = ["Execution", "execute"]
