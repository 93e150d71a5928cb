"""Template arguments (`enable_thinking`, `reasoning_effort`, ...): parsed from the command line and written into a
chat template as its own defaults, so every engine that reads a saved tokenizer renders as it was trained.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/ --template-arg enable_thinking=false
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from eosguard.base.errors import EosguardError


class TemplateArgumentError(EosguardError):
    """A template argument that cannot be set (a reserved name, a value that is not JSON)."""


_RESERVED_ARGS = frozenset(
    {"messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token", "raise_exception"}
)
_ARGS_MARK = re.compile(
    r"\{#- eosguard template arguments: (.*?) -#\}.*?\{#- end of eosguard template arguments -#\}", re.S
)


def with_arguments(source: str, args: Mapping[str, Any]) -> str:
    """The template with `args` as the defaults of its variables (a caller may still pass others), so a saved
    tokenizer renders as it was trained by every engine that reads its template. Defaults eosguard wrote before
    are kept, and overridden by `args`.

    >>> source = with_arguments("{{ enable_thinking }}", {"enable_thinking": False})
    >>> source.split("%}")[1], template_arguments(source)
    ('{%- set enable_thinking = false ', {'enable_thinking': False})
    """
    if not args:
        return source
    found = _ARGS_MARK.match(source)
    merged = {**(json.loads(found.group(1)) if found else {}), **args}
    body = source[found.end() :] if found else source
    lines = []
    for key, value in merged.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key in _RESERVED_ARGS:
            raise TemplateArgumentError(
                f"template argument {key!r} cannot be set",
                hint=f"a name the template reads that is not one of {', '.join(sorted(_RESERVED_ARGS))}",
            )
        lines.append(f"{{%- if {key} is not defined %}}{{%- set {key} = {_jinja_literal(value)} %}}{{%- endif %}}")
    head = f"{{#- eosguard template arguments: {json.dumps(merged)} -#}}"
    return head + "".join(lines) + "{#- end of eosguard template arguments -#}" + body


def template_arguments(source: str) -> dict[str, Any]:
    """The defaults eosguard wrote into a template (empty when none)."""
    found = _ARGS_MARK.match(source)
    return json.loads(found.group(1)) if found else {}


def _jinja_literal(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_jinja_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_jinja_literal(v)}" for k, v in value.items()) + "}"
    raise TemplateArgumentError(f"template argument value {value!r} is not a JSON value")


def parse_template_args(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (VALUE read as YAML: false, 3, low, [a, b]) as template arguments."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise EosguardError(f"--template-arg {item!r}: expected KEY=VALUE (e.g. enable_thinking=false)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise EosguardError(f"--template-arg {item!r}: the value is not YAML") from None
    return out
