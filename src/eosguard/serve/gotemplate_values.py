"""Go values as `text/template` sees them, and the functions Ollama's templates call (Go's builtins and Ollama's own).

Go values in Python: `str`, `bool`, `int`, `float`; `GoSlice` (a slice, `stringer` set for a type with a `String`
method, as Ollama's `templateTools`); `dict` (a `map[string]any`); `GoStruct` (a pointer to a struct: unknown
fields are Go's error); `NIL` (a nil interface: a missing map key under `missingkey=zero`) and `INVALID` (no value:
a missing key without it, or a nil interface once a pipeline hands it on). What Go would print in a form this
renderer does not model (a struct, a list of structs, a `printf` verb beyond `%s %v %d %q %%`) is `NotFollowed`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eosguard.serve.gotemplate_lex import GoTemplateError, NotFollowed


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NIL = _Sentinel("NIL")  # a valid nil interface{} (reflect.Zero of the map's element type)
INVALID = _Sentinel("INVALID")  # no value at all (an invalid reflect.Value)
NO_FINAL = _Sentinel("MISSING")  # no final argument from a previous pipeline stage


class GoSlice(list):
    """A Go slice; `stringer` is its type's `String` method where it has one; `nil` marks a nil slice."""

    def __init__(self, items: Any = (), *, stringer: Callable[[GoSlice], str] | None = None, nil: bool = False):
        super().__init__(items)
        self.stringer, self.nil = stringer, nil


@dataclass
class GoStruct:
    """A pointer to a Go struct: `type` as Go names it in errors, `fields` in declaration order."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)


def truth(value: Any) -> bool:
    """Go's `isTrue` on a value: empty strings, slices and maps, zero numbers, false, nil and no value are false."""
    if value is NIL or value is INVALID or value is None:
        return False
    if isinstance(value, GoStruct):
        return True
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return bool(value)


def _kind(value: Any) -> str:
    if value is NIL or value is INVALID:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string"}.get(type(value), "other")


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise GoTemplateError("missing argument for comparison")
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            if "invalid" not in (ka, kb):
                raise GoTemplateError("incompatible types for comparison")
            continue
        if ka in ("other", "invalid"):
            raise NotFollowed(f"eq on {ka} values")
        if a == b:
            return True
    return False


def _less(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in ("int", "float", "string"):
        raise GoTemplateError("incompatible types for comparison" if ka != kb else "invalid type for comparison")
    return a < b


def _utf8(value: str) -> bytes:
    return value.encode("utf-8")


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(_utf8(value))  # Go counts bytes
    if isinstance(value, list | dict):
        return len(value)
    if value is NIL:
        raise GoTemplateError("len of nil pointer")
    raise GoTemplateError(f"len of type {type(value).__name__}")


def _slice(item: Any, *idx: Any) -> Any:
    if any(not isinstance(i, int) or isinstance(i, bool) for i in idx) or len(idx) > 3:
        raise GoTemplateError("slice: bad index arguments")
    if isinstance(item, str):
        if len(idx) == 3:
            raise GoTemplateError("cannot 3-index slice a string")
        raw = _utf8(item)
        bounds = (*idx, len(raw))[:2] if idx else (0, len(raw))
        if not 0 <= bounds[0] <= bounds[1] <= len(raw):
            raise GoTemplateError(f"slice: index out of range: {bounds}")
        try:
            return raw[bounds[0] : bounds[1]].decode("utf-8")
        except UnicodeDecodeError:
            raise NotFollowed("slice cuts a character in two (Go keeps the bytes)") from None
    if not isinstance(item, list):
        raise GoTemplateError(f"can't slice item of type {type(item).__name__}")
    lo, hi = (idx[0] if idx else 0), (idx[1] if len(idx) > 1 else len(item))
    if not 0 <= lo <= hi <= len(item):
        raise GoTemplateError(f"slice: index out of range: [{lo}:{hi}]")
    return GoSlice(item[lo:hi], stringer=getattr(item, "stringer", None))


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key, NIL)
        elif isinstance(item, list | str) and isinstance(key, int) and not isinstance(key, bool):
            seq = _utf8(item) if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise GoTemplateError(f"error calling index: index out of range: {key}")
            item = seq[key]
        else:
            raise GoTemplateError(f"error calling index: can't index item of type {type(item).__name__}")
    return item


def go_string(value: Any) -> str:
    """What `fmt.Fprint` writes for a value a template prints."""
    if value is INVALID or value is NIL:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "inf" in text or "nan" in text:
            raise NotFollowed(f"printing the number {text}")
        return text.removesuffix(".0")
    if isinstance(value, GoSlice) and value.stringer is not None:
        return value.stringer(value)
    if isinstance(value, GoStruct):  # a pointer is printed as the struct it points to: {field field ...}
        return "{" + " ".join(go_string(v) for v in value.fields.values()) + "}"
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return "[" + " ".join(map(str, value)) + "]"
    raise NotFollowed(f"printing a {type(value).__name__} value (Go's own %v form)")


def go_json(value: Any) -> str:
    r"""`json.Marshal` as Go writes it: <, > and & escaped, map keys sorted, struct fields in order, nil slices null.

    >>> print(go_json({"b": [1, "<a>"], "a": None}))
    {"a":null,"b":[1,"\u003ca\u003e"]}
    """
    if value is NIL or value is INVALID or value is None or (isinstance(value, GoSlice) and value.nil):
        return "null"
    if isinstance(value, GoStruct):
        return "{" + ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in value.fields.items()) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, float):
        raise NotFollowed("json of a float (Go's own number form)")
    text = json.dumps(value, ensure_ascii=False)
    for char, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


def _printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise GoTemplateError("wrong type for value; expected string")
    out, i, n = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1 : i + 2]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if verb not in ("s", "v", "d", "q") or n >= len(args):
            raise NotFollowed(f"printf verb %{verb} (or a missing argument)")
        arg, n = args[n], n + 1
        if verb == "d" and not (isinstance(arg, int) and not isinstance(arg, bool)):
            raise NotFollowed("printf %d of a value that is no integer")
        if verb in ("s", "q") and not isinstance(arg, str):
            raise NotFollowed(f"printf %{verb} of a value that is no string")
        if verb == "q" and not (arg.isascii() and arg.isprintable()):
            raise NotFollowed("printf %q of a string with characters Go quotes its own way")
        quoted = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"' if verb == "q" else ""
        out.append(quoted or go_string(arg))
    if n != len(args):
        raise NotFollowed("printf with more arguments than verbs")
    return "".join(out)


def _operand(value: Any) -> str:
    """An operand of print / println: a nil interface prints as <nil>."""
    return "<nil>" if value is NIL or value is INVALID else go_string(value)


def _print(*args: Any) -> str:
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += _operand(arg)
    return out


def _today(offset: int) -> Callable[..., str]:
    def date(*args: Any) -> str:
        if any(not isinstance(a, str) for a in args):
            raise GoTemplateError("wrong type for value; expected string")
        return (datetime.date.today() - datetime.timedelta(days=offset)).isoformat()

    return date


def _not_followed(name: str) -> Callable[..., Any]:
    def call(*_: Any) -> Any:
        raise NotFollowed(f"the function {name}")

    return call


FUNCS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _less,
    "le": lambda a, b: _less(a, b) or _eq(a, b),
    "gt": lambda a, b: not (_less(a, b) or _eq(a, b)),
    "ge": lambda a, b: not _less(a, b),
    "not": lambda a: not truth(a),
    "len": _len,
    "slice": _slice,
    "index": _index,
    "print": _print,
    "println": lambda *a: " ".join(map(_operand, a)) + "\n",
    "printf": _printf,
    "json": go_json,
    "currentDate": _today(0),
    "yesterdayDate": _today(1),
    **{name: _not_followed(name) for name in ("call", "html", "js", "urlquery", "toTypeScriptType")},
}
ARITY = {"not": 1, "len": 1, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "json": 1, "toTypeScriptType": 1}
VARIADIC = {"print", "println", "currentDate", "yesterdayDate"}  # may take no argument
ANY_TYPED = {"json", "toTypeScriptType", "print", "println", "printf"}  # parameters of type any: nil is accepted


__all__ = [
    "ANY_TYPED",
    "ARITY",
    "FUNCS",
    "INVALID",
    "NIL",
    "NO_FINAL",
    "VARIADIC",
    "GoSlice",
    "GoStruct",
    "go_json",
    "go_string",
    "truth",
]
