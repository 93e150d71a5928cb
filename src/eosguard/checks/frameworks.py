"""What axolotl and LLaMA-Factory do to a tokenizer before they train with it, read from their config: the chat
template a named `chat_template:` / `template:` stands for, and the tokens they add (`doctor --config`).

Both frameworks load the base model's tokenizer and change it before they tokenize a single row; the doctor applies
the same changes to a copy (`framework_tokenizer`), so every later check reads the tokenizer the run really used.
Read in their source (axolotl 0.19.0: `loaders/tokenizer.py`, `utils/chat_templates/base.py`,
`prompt_strategies/chat_template.py`; LLaMA-Factory 0.9.5: `model/patcher.py`, `data/template.py`), never imported:

- axolotl: `special_tokens` (each set with `add_special_tokens`: `eos_token: <|im_end|>` makes it the eos),
  `tokens` (`add_tokens`), `special_tokens.additional_special_tokens`; pad = eos when none; then `chat_template`
  (`tokenizer_default`, `tokenizer_default_fallback_X`, `jinja` with `chat_template_jinja`, or a name: a file of its
  package, `axolotl/utils/chat_templates/templates/NAME.jinja`) written into the tokenizer it saves;
- LLaMA-Factory: `add_tokens` / `add_special_tokens` (comma-separated; any new one turns `resize_vocab` on); then its
  `template:` (a `register_template(...)` call in `llamafactory/data/template.py`): `replace_eos` makes the first
  stop word the eos, the other stop words become special tokens, pad = eos when none, and the template's own Jinja
  replaces the tokenizer's where it has none or the template says `replace_jinja_template`. No `template:` key:
  LLaMA-Factory parses the tokenizer's own template.

A named template is resolved where eosguard can know it (`resolve_named`): ChatML (built in); the tokenizer's own
template where the name means it (`tokenizer_default`, no `template:`, or a name of the family the tokenizer's own
template is: its turn token is in it, an assumption the report states); the framework's files where it is installed in
this Python (read as text, not imported). Where none applies, the reason is the true one, and the checks that need
the template are skipped, never passed.

Run as:
    eosguard doctor --config train.yaml [--tokenizer PATH]
"""

from __future__ import annotations

import ast
import copy
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.chat.families import chatml_template

# A name a framework gives a template -> a control token every template of that family writes. Used only to decide
# that a name means the tokenizer's own template (its template writes that token), an assumption stated in the report.
FAMILY_TOKENS: tuple[tuple[str, str], ...] = (
    ("chatml", "<|im_start|>"),
    ("qwen", "<|im_start|>"),
    ("llama3", "<|start_header_id|>"),
    ("llama4", "<|header_start|>"),
    ("gemma", "<start_of_turn>"),
    ("phi", "<|assistant|>"),
    ("mistral", "[INST]"),
)


@dataclass
class NamedTemplate:
    """How a config's template name was resolved: `source` (Jinja; None: unresolved), `how` (said in the report),
    `assumed` (the name was taken to mean the tokenizer's own template)."""

    source: str | None
    how: str
    assumed: bool = False


@dataclass
class FrameworkTokenizer:
    """The tokenizer as the framework trains with it, and what it changed: `added` tokens new to the vocabulary
    (new embedding rows), `template` how the chat template was resolved, `notes` other changes in its words."""

    tokenizer: Any
    template: NamedTemplate
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    multipiece: list[str] = field(default_factory=list)  # axolotl: new special tokens its check counts as new


def installed_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed package, found without importing it (its top-level spec only)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, *parts)
        if path.is_file():
            return path
    return None


def _own_family(name: str, tok: Any) -> str | None:
    """The token by which `name` is taken to mean the tokenizer's own template, or None."""
    own = getattr(tok, "chat_template", None)
    if not isinstance(own, str):
        return None
    vocab = tok.get_vocab()
    key = name.lower().replace("-", "_")
    return next((t for prefix, t in FAMILY_TOKENS if key.startswith(prefix) and t in own and t in vocab), None)


def _own_or_unresolved(framework: str, key: str, name: str, tok: Any, where: str) -> NamedTemplate:
    token = _own_family(name, tok)
    if token is not None:
        return NamedTemplate(
            tok.chat_template,
            f"`{key}: {name}` taken as the tokenizer's own template, which writes {token} ({framework} is not "
            f"installed in this Python to read {where}; the turn headers and stop tokens are the family's, a default "
            "system prompt may differ)",
            assumed=True,
        )
    own = "has no chat template" if not getattr(tok, "chat_template", None) else "has a template of another family"
    return NamedTemplate(
        None,
        f"`{key}: {name}` is a template of {framework}'s own ({where}), and {framework} is not installed in this "
        f"Python to read it; the tokenizer {own}: give --tokenizer the folder {framework} saved (it holds the "
        "template the run trained with), or install the framework here",
    )


def axolotl_template(settings: Mapping[str, Any], tok: Any) -> NamedTemplate:
    """axolotl's `chat_template` choice (`utils/chat_templates/base.py` `get_chat_template`)."""
    choice = settings.get("chat_template")
    jinja = settings.get("chat_template_jinja")
    if not choice:
        if jinja:
            choice = "jinja"
        else:
            own = getattr(tok, "chat_template", None)
            return NamedTemplate(own, "no `chat_template`: axolotl keeps the tokenizer's own")
    if choice == "jinja":
        if not jinja:
            return NamedTemplate(None, "`chat_template: jinja` without `chat_template_jinja`: axolotl refuses it")
        path = Path(str(jinja)).expanduser()
        text = path.read_text(encoding="utf-8") if path.is_file() else str(jinja)
        return NamedTemplate(text, "`chat_template_jinja`" + (f" ({path})" if path.is_file() else ""))
    if choice == "tokenizer_default" or str(choice).startswith("tokenizer_default_fallback_"):
        own = getattr(tok, "chat_template", None)
        if own:
            return NamedTemplate(own, f"`chat_template: {choice}`: the tokenizer's own")
        if choice == "tokenizer_default":
            return NamedTemplate(
                None, "`chat_template: tokenizer_default` and the tokenizer has none: axolotl refuses it"
            )
        choice = str(choice).removeprefix("tokenizer_default_fallback_")
    if choice == "chatml":
        return NamedTemplate(chatml_template(None), "`chat_template: chatml` (axolotl's ChatML, built into eosguard)")
    where = f"axolotl/utils/chat_templates/templates/{choice}.jinja"
    path = installed_file("axolotl", "utils", "chat_templates", "templates", f"{choice}.jinja")
    if path is not None:
        return NamedTemplate(path.read_text(encoding="utf-8"), f"`chat_template: {choice}` read from {path}")
    return _own_or_unresolved("axolotl", "chat_template", str(choice), tok, where)


# -- LLaMA-Factory --------------------------------------------------------------------------------------------------


@dataclass
class LlamaFactoryTemplate:
    """One `register_template(...)` of LLaMA-Factory, as its arguments are written (slots: strings with `{{content}}`,
    `{"bos_token"}` / `{"eos_token"}` sets, `{"token": ...}` dicts)."""

    name: str
    user: list[Any]
    assistant: list[Any]
    system: list[Any]
    prefix: list[Any]
    default_system: str = ""
    stop_words: list[str] = field(default_factory=list)
    efficient_eos: bool = False
    replace_eos: bool = False
    replace_jinja_template: bool = False


# LLaMA-Factory 0.9.5's `template: chatml`, as `data/template.py` registers it: its turns, and its stop words, the first
# of which `replace_eos` makes the eos (the one named template eosguard knows without LLaMA-Factory installed).
LF_CHATML = LlamaFactoryTemplate(
    name="chatml",
    user=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
    assistant=["{{content}}<|im_end|>\n"],
    system=["<|im_start|>system\n{{content}}<|im_end|>\n"],
    prefix=[],
    stop_words=["<|im_end|>", "<|im_start|>"],
    replace_eos=True,
    replace_jinja_template=True,
)


def _slots(node: ast.AST | None) -> list[Any] | None:
    """The slots of a `XFormatter(slots=[...])` (or positional) call; None when absent or not literal."""
    if not isinstance(node, ast.Call):
        return None
    arg = next((k.value for k in node.keywords if k.arg == "slots"), node.args[0] if node.args else None)
    try:
        return list(ast.literal_eval(arg)) if arg is not None else None
    except (ValueError, SyntaxError):
        return None


def read_llamafactory_templates(path: Path) -> dict[str, LlamaFactoryTemplate]:
    """Every `register_template(...)` call in LLaMA-Factory's `data/template.py`, read with `ast` (never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, LlamaFactoryTemplate] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_template"):
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}

        def const(key: str, default: Any, kw: dict[str, ast.AST] = kw) -> Any:
            try:
                return ast.literal_eval(kw[key]) if key in kw else default
            except (ValueError, SyntaxError):
                return default

        name = const("name", None)
        if not isinstance(name, str):
            continue
        efficient = bool(const("efficient_eos", False))
        user = _slots(kw.get("format_user")) or ["{{content}}"]
        out[name] = LlamaFactoryTemplate(
            name=name,
            user=user,
            assistant=_slots(kw.get("format_assistant")) or (["{{content}}"] + ([] if efficient else [{"eos_token"}])),
            system=_slots(kw.get("format_system")) or user,
            prefix=_slots(kw.get("format_prefix")) or [],
            default_system=const("default_system", "") or "",
            stop_words=list(const("stop_words", []) or []),
            efficient_eos=efficient,
            replace_eos=bool(const("replace_eos", False)),
            replace_jinja_template=bool(const("replace_jinja_template", False)),
        )
    return out


def _jinja_text(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _slots_jinja(slots: list[Any], tok: Any, placeholder: str = "content") -> str:
    """Slots as one Jinja expression: text around `{{content}}`, bos / eos as the tokenizer's tokens at that time."""
    parts: list[str] = []
    for s in slots:
        if isinstance(s, str):
            before, found, after = s.partition("{{content}}")
            parts += [_jinja_text(before)] if before else []
            parts += [placeholder] if found else []
            parts += [_jinja_text(after)] if after else []
        elif isinstance(s, set):
            token = tok.bos_token if "bos_token" in s else tok.eos_token if "eos_token" in s else None
            parts += [_jinja_text(token)] if token else []
        elif isinstance(s, dict) and s.get("token"):
            parts.append(_jinja_text(str(s["token"])))
    return " + ".join(parts) or "''"


def llamafactory_jinja(t: LlamaFactoryTemplate, tok: Any) -> str:
    """The Jinja template a LLaMA-Factory template stands for: its prefix, its system turn (the default system prompt
    when a conversation brings none), then each user / assistant turn through its slots, as it encodes rows."""
    head = "{{ " + _slots_jinja(t.prefix, tok) + " }}" if t.prefix else ""
    system = "{% set system_message = " + _jinja_text(t.default_system) + " %}" if t.default_system else ""
    return (
        head + system + "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
        "{% if system_message is defined and system_message %}{{ "
        + _slots_jinja(t.system, tok, "system_message")
        + " }}{% endif %}{% for message in loop_messages %}{% set content = message['content'] %}"
        "{% if message['role'] == 'user' %}{{ "
        + _slots_jinja(t.user, tok)
        + " }}{% elif message['role'] == 'assistant' %}{{ "
        + _slots_jinja(t.assistant, tok)
        + " }}{% endif %}{% endfor %}"
    )


def llamafactory_template(name: str | None, tok: Any) -> tuple[NamedTemplate, LlamaFactoryTemplate | None]:
    """LLaMA-Factory's `template:` (None: it parses the tokenizer's own): the template's own arguments where its
    installed `data/template.py` was read (the Jinja is built later, once its eos is set: `llamafactory_jinja`)."""
    if not name:
        own = getattr(tok, "chat_template", None)
        return NamedTemplate(own, "no `template`: LLaMA-Factory parses the tokenizer's own"), None
    path = installed_file("llamafactory", "data", "template.py")
    if path is not None:
        found = read_llamafactory_templates(path).get(name)
        if found is None:
            return NamedTemplate(
                None, f"`template: {name}` is not registered in {path}: LLaMA-Factory refuses it"
            ), None
        return NamedTemplate(None, f"`template: {name}` read from {path}"), found
    if name == "chatml":
        return NamedTemplate(None, "`template: chatml` (LLaMA-Factory 0.9.5's ChatML, built into eosguard)"), LF_CHATML
    named = _own_or_unresolved("LLaMA-Factory", "template", name, tok, "llamafactory/data/template.py")
    if named.assumed:  # 41 of its 123 templates set `replace_eos` (qwen's: <|im_end|> becomes the eos): unread here
        named.how += (
            "; its `replace_eos` (which makes a template's first stop word the eos) could not be read either: the eos "
            "shown is the tokenizer's"
        )
    return named, None


# -- the tokenizer each framework trains with ----------------------------------------------------------------------


def as_list(value: Any) -> list[str]:
    """A config value that lists names: a YAML list, or one comma-separated string (`embed_tokens,lm_head`)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _add(tok: Any, tokens: list[str], *, special: bool) -> list[str]:
    """Add tokens as the frameworks do (`AddedToken`, never normalized); returns those new to the vocabulary."""
    from tokenizers import AddedToken

    vocab = tok.get_vocab()
    new = [t for t in dict.fromkeys(tokens) if t not in vocab]
    if tokens:
        tok.add_tokens([AddedToken(t, normalized=False, special=special) for t in tokens], special_tokens=special)
    return new


def axolotl_tokenizer(settings: Mapping[str, Any], tok: Any) -> FrameworkTokenizer:
    """axolotl's `load_tokenizer` on a copy: special tokens, tokens, pad, then the chat template."""
    tok = copy.deepcopy(tok)
    added: list[str] = []
    notes: list[str] = []
    special = dict(settings.get("special_tokens") or {})
    extra = as_list(special.pop("additional_special_tokens", None))
    vocab = tok.get_vocab()
    multipiece = []
    for key, value in special.items():
        if value is None or not hasattr(tok, key):
            continue
        if str(value) not in vocab:
            added.append(str(value))
        if (
            key != "pad_token"
            and getattr(tok, key) != value
            and len(tok.encode(str(value), add_special_tokens=False)) > 2
        ):
            multipiece.append(str(value))  # loaders/tokenizer.py: refused with an adapter that saves no embeddings
        tok.add_special_tokens({key: str(value)})
        if key == "eos_token":
            notes.append(f"`special_tokens.eos_token: {value}` makes it the eos")
    added += _add(tok, as_list(settings.get("tokens")), special=False)
    added += _add(tok, extra, special=True)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    named = axolotl_template(settings, tok)
    if named.source:
        tok.chat_template = named.source
    return FrameworkTokenizer(tok, named, list(dict.fromkeys(added)), notes, multipiece)


def llamafactory_tokenizer(settings: Mapping[str, Any], tok: Any) -> tuple[FrameworkTokenizer, bool]:
    """LLaMA-Factory's `patch_tokenizer` and `get_template_and_fix_tokenizer` on a copy; also whether it resizes the
    embeddings (`resize_vocab`, or turned on because `add_tokens` / `add_special_tokens` added a token)."""
    tok = copy.deepcopy(tok)
    added = _add(tok, as_list(settings.get("add_tokens")), special=False)
    added += _add(tok, as_list(settings.get("add_special_tokens")), special=True)
    resize = bool(settings.get("resize_vocab")) or bool(added)
    notes = ["new tokens turn `resize_vocab` on"] if added and not settings.get("resize_vocab") else []
    named, found = llamafactory_template(settings.get("template"), tok)
    if found is not None:  # `fix_special_tokens`, then `fix_jinja_template`
        stops = list(found.stop_words)
        if found.replace_eos and stops:
            eos = stops.pop(0)
            if tok.eos_token != eos:
                added += [eos] if eos not in tok.get_vocab() else []
                tok.add_special_tokens({"eos_token": eos})
                notes.append(f"its template's `replace_eos` makes {eos} the eos")
        if tok.eos_token is None:
            added += [] if "<|endoftext|>" in tok.get_vocab() else ["<|endoftext|>"]
            tok.add_special_tokens({"eos_token": "<|endoftext|>"})
        added += _add(tok, stops, special=True)
        if tok.chat_template and not found.replace_jinja_template:
            named.source = tok.chat_template
            named.how += " (the tokenizer keeps its own Jinja template, which is what the saved folder serves)"
        else:
            named.source = llamafactory_jinja(found, tok)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if named.source:
        tok.chat_template = named.source
    return FrameworkTokenizer(tok, named, list(dict.fromkeys(added)), notes), resize


__all__ = [
    "FrameworkTokenizer",
    "LlamaFactoryTemplate",
    "NamedTemplate",
    "as_list",
    "axolotl_template",
    "axolotl_tokenizer",
    "installed_file",
    "llamafactory_jinja",
    "llamafactory_template",
    "llamafactory_tokenizer",
    "read_llamafactory_templates",
]
