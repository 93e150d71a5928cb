"""The one printer of the `eosguard` commands: plain lines, a doctor report, a stop-rate table, generations, JSON.

On a terminal rich fits its width; in a pipe or a log it would wrap tables (and --help's option descriptions) at 80
columns, so lines run long there instead (`PIPE_WIDTH`).

Run as:
    eosguard doctor --tokenizer PATH --show 1
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer import rich_utils

PIPE_WIDTH = 160
console = Console(stderr=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)
if not sys.stdout.isatty() and rich_utils.MAX_WIDTH is None:
    rich_utils.MAX_WIDTH = PIPE_WIDTH


def lines(items: Iterable[str], *, to_stderr: bool = False) -> None:
    """Lines as they are: no markup, no highlighting, wrapped only by the terminal."""
    for line in items:
        (err if to_stderr else console).print(line, highlight=False, markup=False, soft_wrap=True)


def log(line: str) -> None:
    """A progress line of a long command (train, demo)."""
    lines([line])


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def as_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def doctor_report(report: Any, title: str | None = None) -> None:
    """Numbered steps (✓ / ✗ / – skipped), the examples shown token by token, the findings and the verdict."""
    from eosguard.checks.tokenview import TRAINED_CLOSE, TRAINED_OPEN, marked_segments

    if title:
        console.print(f"\n[bold]{escape(title)}[/]", highlight=False)
    for i, step in enumerate(report.steps, start=1):
        mark = "[yellow]–[/]" if step.skipped else "[green]✓[/]" if step.ok else "[red]✗[/]"
        console.print(f"{i}. {mark} {escape(step.title)}: {escape(step.detail)}", highlight=False)
    if report.facts.get("data"):
        console.print(f"   data: {escape(report.facts['data'])}", highlight=False)
    if report.shown:
        console.print(f"\n{TRAINED_OPEN}...{TRAINED_CLOSE} = trained (loss taken), the rest masked (-100); ↵ = newline")
    styles = {"trained": "bold green underline", "masked": "dim", "mark": "bold green", "pad": "dim italic"}
    for n, example in enumerate(report.shown, start=1):
        console.print(f"example {n}:")
        console.print(Text.assemble(*((text, styles[kind]) for text, kind in marked_segments(example))), soft_wrap=True)
    verdict = report.verdict()
    if not report.findings:
        console.print(f"\n[{'yellow' if report.skipped else 'green'}]{escape(verdict)}[/]", highlight=False)
        return
    table = Table(title="findings", show_lines=True)
    for col in ("severity", "id", "count", "what", "fix"):
        table.add_column(col, overflow="fold")
    colors = {"error": "red", "warning": "yellow"}
    for f in report.findings:
        count = "" if f.count is None else str(f.count)
        table.add_row(f"[{colors[f.severity]}]{f.severity}[/]", f.id, count, escape(f.message), escape(f.fix))
    console.print(table)
    if report.skipped:
        console.print(f"[yellow]{escape(verdict)}[/]", highlight=False)


def stop_table(result: Any, max_new_tokens: int) -> None:
    """A `StopReport` as a table: all replies, then each kind of reply where there are several."""
    from eosguard.chat.templates import KIND_NAMES

    table = Table(title=f"stopping on {result.n} prompts ({max_new_tokens} new tokens at most)")
    for col in ("replies", "n", "stop rate", "runaway", "role leak", "exact match", "mean new tokens", "p95"):
        table.add_column(col)
    rows = [("all", result.to_dict())] + [(KIND_NAMES[k], v) for k, v in result.by_kind.items()]
    for name, fig in rows:
        table.add_row(
            name,
            str(fig["n"]),
            f"{fig['stop_rate']:.1%}",
            f"{fig['runaway_rate']:.1%}",
            "-" if fig["role_leak_rate"] is None else f"{fig['role_leak_rate']:.1%}",
            "-" if fig["exact_match"] is None else f"{fig['exact_match']:.1%}",
            f"{fig['mean_new_tokens']:.1f}",
            f"{fig['p95_new_tokens']:.0f}",
        )
    console.print(table)


def generations(result: Any, n: int) -> None:
    for g in result.generations[:n]:
        end = "(stopped)" if g.stopped else "(no stop)"
        console.print(f"[bold]{escape(repr(g.prompt))}[/] -> {escape(repr(g.output))} {end}", highlight=False)


__all__ = ["as_json", "doctor_report", "error", "generations", "lines", "log", "stop_table"]
