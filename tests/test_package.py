"""The package's shape: layer folders imported only downwards, no import circles, and what the README and docs
claim (every command with its example, every docs page linked, tables generated from the code) equal to the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.checks.findings import FINDINGS, markdown_table

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "eosguard"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every eosguard module a module imports: at module level, inside functions and in its `__main__` block (a
    deferred import still ties the two modules together)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eosguard"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from eosguard import x` may name a module
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("eosguard")}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            deps.add(target)
            parent = target.rsplit(".", 1)[0]  # importing a.b runs a/__init__ first
            if parent in modules and parent != name:
                deps.add(parent)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


LAYERS = ("base", "data", "chat", "training", "checks", "integrations", "serve", "recipes", "cli", "testing")
"""The layer folders, lowest first: a module may import its own layer and those below it, never one above (docs/
development.md draws them). `testing` is test material: no runtime module imports it."""


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer_folder():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"put these in a layer folder: {loose}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted(LAYERS)


def test_no_module_imports_a_layer_above_its_own():
    against = []
    for module, deps in _graph().items():
        own = _layer(module)
        if own is None:  # eosguard/__init__ (names imported on first use) and __main__ (runs the CLI)
            continue
        against += [f"{module} -> {d}" for d in deps if (_layer(d) or 0) > own]
    assert not against, "imports against the layer order:\n" + "\n".join(sorted(against))


def test_the_public_api_stays():
    import eosguard
    import eosguard.integrations

    for name in eosguard.__all__:
        assert getattr(eosguard, name) is not None, name
    assert {"guard_trainer", "StopRateCallback"} <= set(eosguard.integrations.__all__)
    with pytest.warns(DeprecationWarning, match="use ChatRenderer"):
        assert eosguard.ChatMLRenderer is eosguard.ChatRenderer  # 0.1's name: any template, not ChatML only


def test_docs_findings_table_is_the_registry():
    page = (ROOT / "docs" / "doctor.md").read_text()
    assert markdown_table() in page
    assert len(FINDINGS) == markdown_table().count("\n| `")


def test_docs_config_reference_is_the_config_model():
    from eosguard.recipes.config import TrainConfig, reference

    assert reference() in (ROOT / "docs" / "training.md").read_text()
    assert all(f"| `{name}" in reference() for name in TrainConfig.model_fields)  # sections list their keys


def test_readme_stays_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
    from eosguard.cli.app import EXAMPLES, app

    groups = {g.name: g.typer_instance.registered_commands for g in app.registered_groups}
    commands = [c.name for c in app.registered_commands] + [f"{g} {c.name}" for g, cs in groups.items() for c in cs]
    assert sorted(commands) == sorted(EXAMPLES)  # every command has its example
    for name, example in EXAMPLES.items():  # the commands table lists every command, with the example its --help shows
        assert f"| `eosguard {name}` |" in readme and f"`{example}`" in readme, name
        help_text = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200).output
        assert " ".join(example.split()) in " ".join(help_text.split()), name


def test_a_module_over_400_lines_says_why():
    page = (ROOT / "docs" / "development.md").read_text()
    reasons = page.split("## Modules over 400 lines")[1]
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if len(path.read_text().splitlines()) > 400:
            assert f"| `{name}` |" in reasons, f"{name}: split it, or say in docs/development.md why not"


def test_the_command_table_only_parses():
    """cli/app.py stays a table of commands (options declared in cli/args.py, work done in recipes): under 300
    lines."""
    assert len((PACKAGE / "cli" / "app.py").read_text().splitlines()) < 300
