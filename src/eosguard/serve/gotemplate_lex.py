"""Go's `text/template` lexer: a TEMPLATE cut into text and the tokens of its actions, as Go's `parse/lex.go` cuts
it (`{{-` / `-}}` trim the whitespace beside them, comments vanish), and the two errors of the Go renderer.

Two errors, never mixed up: `GoTemplateError` is what Go itself refuses (so Ollama refuses it too), `NotFollowed`
what this renderer does not follow (`define`, `template`, `block`, complex numbers, ...): a check that meets either
never passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPACE = " \t\r\n"
BUILTINS = frozenset(
    [
        "and",
        "call",
        "html",
        "index",
        "slice",
        "js",
        "len",
        "not",
        "or",
        "print",
        "printf",
        "println",
        "urlquery",
        "eq",
        "ge",
        "gt",
        "le",
        "lt",
        "ne",
    ]
)
OLLAMA_FUNCS = frozenset({"json", "currentDate", "yesterdayDate", "toTypeScriptType"})  # template.go's `funcs`
_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block", "nil"})
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(\d[\d_]*)?\.?\d*([eE][+-]?\d+)?)i?")


class GoTemplateError(Exception):
    """What Go's `text/template` refuses (at parse or execution): Ollama refuses it too. `line` is the template's
    line (1-based) where Go reports it, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.reason, self.line = message, line


class NotFollowed(Exception):
    """A construct this renderer does not follow: the check that needed it cannot say what Ollama writes."""


# -- the lexer ---------------------------------------------------------------------------------------------------


@dataclass
class Token:
    kind: str  # text left right space assign declare pipe string number variable field dot ident keyword bool ( ) , eof
    value: object
    line: int


def _right_delim(src: str, at: int) -> tuple[bool, bool]:
    """Whether a right delimiter starts at `at`, and whether it trims (` -}}`)."""
    if at + 1 < len(src) and src[at] in SPACE and src[at + 1] == "-" and src.startswith("}}", at + 2):
        return True, True
    return src.startswith("}}", at), False


_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.?))")
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unquote(body: str, line: int) -> str:
    """A Go interpreted string literal's value (strconv.Unquote); a byte escape above 0x7f (no character of its
    own in Go) is not followed."""

    def one(m: re.Match) -> str:
        simple, hex_byte, octal, short, long, bad = m.groups()
        if bad is not None:
            raise GoTemplateError(f"invalid syntax: unknown escape {m.group(0)!r}", line)
        if simple is not None:
            return _SIMPLE.get(simple, simple)
        code = int(hex_byte or octal or short or long, 8 if octal else 16)
        if (hex_byte or octal) and code > 0x7F:
            raise NotFollowed(f"line {line}: the byte escape {m.group(0)!r} (not a whole character)")
        return chr(code)

    return _ESCAPE.sub(one, body)


def lex(src: str) -> list[Token]:
    out: list[Token] = []
    pos = 0

    def line_at(at: int) -> int:
        return src.count("\n", 0, at) + 1

    def fail(message: str, at: int) -> GoTemplateError:
        return GoTemplateError(message, line_at(at))

    while pos < len(src):
        start = src.find("{{", pos)
        if start < 0:
            out.append(Token("text", src[pos:], line_at(pos)))
            break
        text, after = src[pos:start], start + 2
        if src.startswith("-", after) and after + 1 < len(src) and src[after + 1] in SPACE:
            text, after = text.rstrip(SPACE), after + 2
        if text:
            out.append(Token("text", text, line_at(pos)))
        if src.startswith("/*", after):  # a comment: no node, trim markers still apply
            end = src.find("*/", after + 2)
            if end < 0:
                raise fail("unclosed comment", start)
            is_delim, trim = _right_delim(src, end + 2)
            if not is_delim:
                raise fail("comment ends before closing delimiter", start)
            pos = end + 2 + (4 if trim else 2)
            while trim and pos < len(src) and src[pos] in SPACE:
                pos += 1
            continue
        out.append(Token("left", "{{", line_at(start)))
        pos, depth = after, 0
        while True:
            if pos >= len(src):
                raise fail("unclosed action", start)
            is_delim, trim = _right_delim(src, pos)
            if is_delim:
                if depth:
                    raise fail("unclosed left paren", pos)
                out.append(Token("right", "}}", line_at(pos)))
                pos += 4 if trim else 2
                while trim and pos < len(src) and src[pos] in SPACE:
                    pos += 1
                break
            c, at = src[pos], pos
            if c in SPACE:
                while pos < len(src) and src[pos] in SPACE:
                    pos += 1
                if _right_delim(src, pos - 1) == (True, True):  # the space before ` -}}` belongs to it
                    pos -= 1
                if pos > at:
                    out.append(Token("space", " ", line_at(at)))
                continue
            if c == "=" or src.startswith(":=", pos) or c in "|(),":
                kind = {"=": "assign", ":": "declare", "|": "pipe"}.get(c, c)
                pos += 2 if c == ":" else 1
                depth += {"(": 1, ")": -1}.get(c, 0)
                if depth < 0:
                    raise fail("unexpected right paren", at)
                out.append(Token(kind, c, line_at(at)))
                continue
            if c == '"':
                m = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(src, pos)
                if not m:
                    raise fail("unterminated quoted string", at)
                out.append(Token("string", _unquote(m.group(1), line_at(at)), line_at(at)))
                pos = m.end()
                continue
            if c == "`":
                end = src.find("`", pos + 1)
                if end < 0:
                    raise fail("unterminated raw quoted string", at)
                out.append(Token("string", src[pos + 1 : end], line_at(at)))
                pos = end + 1
                continue
            if c == "'":
                m = re.compile(r"'((?:[^'\\\n]|\\.)+)'").match(src, pos)
                if not m or len(value := _unquote(m.group(1), line_at(at))) != 1:
                    raise fail("unterminated character constant", at)
                out.append(Token("number", ord(value), line_at(at)))
                pos = m.end()
                continue
            word = re.compile(r"[$.]?[\w]*").match(src, pos).group(0) if c in "$." or c.isalpha() or c == "_" else ""
            if c in "+-" or c.isdigit() or (c == "." and src[pos + 1 : pos + 2].isdigit()):
                m = _NUMBER.match(src, pos)
                token = m.group(0)
                if token.endswith("i"):
                    raise NotFollowed(f"line {line_at(at)}: the complex number {token}")
                out.append(Token("number", _number(token, line_at(at)), line_at(at)))
                pos = m.end()
            elif word:
                kind = {"$": "variable", ".": "field"}.get(word[0], "ident")
                if word == ".":
                    kind = "dot"
                elif word in ("true", "false"):
                    kind = "bool"
                elif word in _KEYWORDS:
                    kind = "keyword"
                out.append(Token(kind, word, line_at(at)))
                pos += len(word)
            else:
                raise fail(f"unrecognized character in action: {c!r}", at)
            if pos < len(src) and not (src[pos] in SPACE + ".,|:()" or _right_delim(src, pos)[0]):
                raise fail(f"bad character {src[pos]!r}", pos)
    out.append(Token("eof", None, line_at(len(src))))
    return out


def _number(token: str, line: int) -> int | float:
    digits = token.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", digits):
            return int(digits, 8)
        if re.fullmatch(r"[+-]?(0[xXbBoO])?[0-9a-fA-F]+", digits):
            return int(digits, 0)
        return float(digits)
    except ValueError:
        raise GoTemplateError(f"bad number syntax: {token!r}", line) from None


__all__ = ["BUILTINS", "OLLAMA_FUNCS", "GoTemplateError", "NotFollowed", "Token", "lex"]
