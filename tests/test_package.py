"""The package's shape: no import circles, no library module importing the demo, and the README's findings table
equal to the one registry the doctor reads."""

from __future__ import annotations

import ast
from pathlib import Path

from eosguard.findings import FINDINGS, markdown_table

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "eosguard"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """eosguard modules imported at module level (imports inside functions are deferred on purpose)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eosguard"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("eosguard")}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _top_level_imports(path):
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
        if path.name in ("demo.py", "cli.py", "__main__.py"):
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
    commands = [c.name for c in __import__("eosguard.cli", fromlist=["app"]).app.registered_commands]
    assert all(f"| `eosguard {c}` |" in readme for c in commands)  # the commands table lists every command
