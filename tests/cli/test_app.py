"""The command table: every command's --help light to load, and each option declared once (one help, one default)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest
import typer

from eosguard.cli.app import app

HEAVY = {"numpy", "torch", "tokenizers", "transformers", "datasets"}
COMMANDS = [[], ["doctor"], ["train"], ["eval"], ["prepare"], ["fix"], ["export", "gguf"], ["demo"]]
PROBE = """
import json, sys
sys.argv = ["eosguard", *sys.argv[1:]]
from eosguard.cli.app import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "eosguard")
def test_help_imports_neither_numpy_nor_torch(command):
    done = subprocess.run([sys.executable, "-c", PROBE, *command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "typer" in loaded and not HEAVY & loaded, sorted(HEAVY & loaded)


def _options() -> dict[str, list[tuple[str, object]]]:
    """Every option of every command: name -> [(command, click parameter)]."""
    root = typer.main.get_command(app)
    found: dict[str, list[tuple[str, object]]] = defaultdict(list)

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
                continue
            for p in cmd.params:
                if p.param_type_name == "option":
                    found[p.opts[0]].append((prefix + name, p))

    walk(root, "")
    return found


EXCEPTIONS = {("--model", "demo"): "which demo model runs (tiny | smollm2): the main job's documented command"}


def test_an_option_means_the_same_in_every_command():
    options = {n: [(c, p) for c, p in uses if (n, c) not in EXCEPTIONS] for n, uses in _options().items()}
    shared = {name: uses for name, uses in options.items() if len(uses) > 1}
    assert {"--tokenizer", "--model", "--data", "--max-new-tokens", "--skip-invalid", "--template-arg"} <= set(shared)
    for name, uses in shared.items():
        helps = {p.help for _, p in uses}
        assert len(helps) == 1, f"{name} has {len(helps)} helps: {[(c, p.help) for c, p in uses]}"
        defaults = {repr(p.default) for _, p in uses if not p.required and p.default not in (None, False, ())}
        assert len(defaults) <= 1, f"{name} has defaults {[(c, p.default) for c, p in uses]}"


def test_choices_are_checked_by_the_parser():
    from typer.testing import CliRunner

    for args in (["eval", "--data", "x.jsonl", "--engine", "vllm"], ["demo", "--model", "llama"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Invalid value" in result.output and "Traceback" not in result.output


def test_an_internal_error_has_its_own_exit_code_never_1(monkeypatch):
    """eosguard's own failure is exit 4 with "internal error" and where its traceback went: exit 1 would read as
    "the stop token is lost"."""
    import re
    from pathlib import Path

    from typer.testing import CliRunner

    def broken(options):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("eosguard.recipes.doctor.doctor", broken)
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", "x"])
    out = " ".join(result.output.split())
    assert result.exit_code == 4 and "internal error" in out and "ZeroDivisionError: a bug" in out
    saved = Path(re.search(r"traceback is in (\S+?):", out).group(1))
    assert "raise ZeroDivisionError" in saved.read_text() and "Traceback" not in result.output
    saved.unlink()
