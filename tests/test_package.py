"""The package's shape: no import circles, no library module importing the demo, and what the README and docs
claim (every command with its example, every docs page linked, tables generated from the code) equal to the code."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.testing import CliRunner

from eosguard.findings import FINDINGS, markdown_table

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


def test_no_library_module_imports_the_demo_or_the_cli():
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("demo.py", "demo_report.py", "cli.py", "__main__.py"):
            continue
        text = path.read_text()
        assert "eosguard.demo" not in text and "eosguard.cli" not in text, path


def test_docs_findings_table_is_the_registry():
    page = (ROOT / "docs" / "doctor.md").read_text()
    assert markdown_table() in page
    assert len(FINDINGS) == markdown_table().count("\n| `")


def test_docs_config_reference_is_the_config_model():
    from eosguard.config import TrainConfig, reference

    assert reference() in (ROOT / "docs" / "training.md").read_text()
    assert all(f"| `{name}" in reference() for name in TrainConfig.model_fields)  # sections list their keys


def test_readme_stays_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
    from eosguard.cli import EXAMPLES, app

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
    for path in sorted(PACKAGE.glob("*.py")):
        if len(path.read_text().splitlines()) > 400:
            assert f"| `{path.name}` |" in reasons, f"{path.name}: split it, or say in docs/development.md why not"
