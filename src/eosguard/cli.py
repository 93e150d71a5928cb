"""The `eosguard` command: one module per command, this table maps names to them.

    eosguard demo     -> eosguard.demo.run_demo          the bug and the fix side by side (main job)
    eosguard doctor   -> eosguard.doctor.diagnose        find every way a setup loses the stop token
    eosguard train    -> eosguard.train.train_from_config  fine-tune with the stop token guaranteed
    eosguard eval     -> eosguard.evaluate.evaluate_stopping  measure whether a model stops
    eosguard prepare  -> eosguard.prepare.prepare_dataset  conversations to a tokenized `datasets` folder

Exit codes: 0 ok; 1 doctor errors (or training refused because of them); 2 bad usage or unreadable input;
3 the collator guard stopped training. User errors print a message, never a traceback.

Run as:
    eosguard --help
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from eosguard.errors import EXIT_FINDINGS, EosguardError
from eosguard.render import OverLength, TrainOn

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Chat-model fine-tuning that guarantees the model learns to stop.",
)
# On a terminal rich fits its width; in a pipe or a log it would wrap tables at 80 columns, so lines run long there.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Register a command; the one place a user error becomes a message and its exit code (never a traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except EosguardError as exc:
            from eosguard.distributed import PeerFailed

            if isinstance(exc, PeerFailed):  # rank 0 printed this error; this rank exits with the same code
                raise typer.Exit(exc.exit_code) from None
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return app.command(name=fn.__name__.rstrip("_"))(run)


TemplateArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--template-arg",
        help="A chat-template argument, KEY=VALUE (value read as YAML), e.g. enable_thinking=false; repeatable.",
    ),
]
ToolsFile = Annotated[
    Path | None, typer.Option(help="JSON file of function schemas for conversations that bring no `tools`.")
]


def _template_args(items: list[str] | None) -> dict[str, Any]:
    from eosguard.templates import parse_template_args

    return parse_template_args(items or [])


def _tools(path: Path | None) -> list[dict[str, Any]] | None:
    from eosguard.conversations import load_tools

    return list(load_tools(path)) if path else None


@command
def doctor(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or hub id (only tokenizer files are read).")],
    model: Annotated[
        str | None, typer.Option(help="Model folder: config.json / generation_config.json are read.")
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option(help="Conversations (JSONL or datasets folder); repeatable.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(min=1, help="Training max length, for truncation checks.")] = None,
    collator: Annotated[str, typer.Option(help="eosguard | transformers | trl | MODULE:FACTORY")] = "eosguard",
    lora: Annotated[bool, typer.Option(help="The run uses LoRA without training the embedding rows.")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Skip malformed records (counted) instead of stopping.")] = False,
    show: Annotated[int, typer.Option(min=0, help="Print N collated examples token by token.")] = 0,
    html: Annotated[
        Path | None, typer.Option(help="Write the label viewer: one self-contained HTML page (findings, tokens).")
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="A second collator to show beside --collator (e.g. --compare eosguard).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow tokenizer code from the repo.")] = False,
    template_arg: TemplateArgs = None,
    tools: ToolsFile = None,
) -> None:
    """Find every way this setup loses the stop token. Exit 1 on an error finding (of --collator's pipeline)."""
    from eosguard.conversations import load_conversations
    from eosguard.doctor import diagnose
    from eosguard.tokenizer_setup import load_tokenizer

    args, offered = _template_args(template_arg), _tools(tools)
    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    convs, load_summary = None, None
    if data:
        convs, rep = load_conversations(data, skip_invalid=skip_invalid)
        load_summary = rep.summary()
    shown = max(show, HTML_EXAMPLES if html else 0)
    reports = []
    for name in [collator] + ([compare] if compare else []):
        report = diagnose(
            tok,
            model_path=model,
            conversations=convs,
            max_length=max_length,
            collator=name,
            lora=lora,
            show=shown,
            tools=offered,
            template_args=args,
        )
        if load_summary:
            report.facts["data"] = load_summary
        reports.append((name, report))
    report = reports[0][1]
    if html:
        from eosguard.files import write_text
        from eosguard.pages import doctor_page

        write_text(html, doctor_page(reports, tokenizer))
    if as_json:
        doc = report.to_dict()
        if compare:
            doc["compare"] = {"collator": compare, **reports[1][1].to_dict()}
        print(json.dumps(doc, indent=2))
    else:
        for name, r in reports:
            if compare:
                console.print(f"\n[bold]pipeline: collator {name!r}[/]", highlight=False)
            r.shown = r.shown[:show]
            _print_doctor(r)
        if html:
            console.print(f"\nwrote {html} (the label viewer: open it in a browser)", highlight=False)
    raise typer.Exit(EXIT_FINDINGS if report.has_errors else 0)


HTML_EXAMPLES = 4  # collated examples in the label viewer when --show asks for fewer


def _print_doctor(report) -> None:
    from eosguard.tokenview import TRAINED_CLOSE, TRAINED_OPEN, marked_segments

    for i, step in enumerate(report.steps, start=1):
        mark = "[yellow]–[/]" if step.skipped else "[green]✓[/]" if step.ok else "[red]✗[/]"
        console.print(f"{i}. {mark} {step.title}: {step.detail}", highlight=False)
    if report.facts.get("data"):
        console.print(f"   data: {report.facts['data']}", highlight=False)
    if report.shown:
        console.print(f"\n{TRAINED_OPEN}...{TRAINED_CLOSE} = trained (loss taken), the rest masked (-100); ↵ = newline")
    styles = {"trained": "bold green underline", "masked": "dim", "mark": "bold green", "pad": "dim italic"}
    for n, example in enumerate(report.shown, start=1):
        console.print(f"example {n}:")
        console.print(Text.assemble(*((text, styles[kind]) for text, kind in marked_segments(example))), soft_wrap=True)
    if not report.findings:
        console.print("\n[green]no findings: the stop token is trained and used[/]")
        return
    table = Table(title="findings", show_lines=True)
    for col in ("severity", "id", "count", "what", "fix"):
        table.add_column(col, overflow="fold")
    colors = {"error": "red", "warning": "yellow", "info": "blue"}
    for f in report.findings:
        table.add_row(
            f"[{colors[f.severity]}]{f.severity}[/]", f.id, "" if f.count is None else str(f.count), f.message, f.fix
        )
    console.print(table)


@command
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see README: 'Fine-tune your own model').")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set lr=1e-4 --set data.train=[a.jsonl]")
    ] = None,
    force: Annotated[bool, typer.Option(help="Train even when the doctor finds errors (loudly).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in output_dir.")] = False,
    template_arg: TemplateArgs = None,
) -> None:
    """Fine-tune a chat model in its own chat template on transformers.Trainer; refuses to start on doctor errors."""
    from eosguard.config import load_config
    from eosguard.train import train_from_config

    sets = list(set_ or []) + (["resume=true"] if resume else [])
    sets += [f"chat_template_kwargs.{k}={json.dumps(v)}" for k, v in _template_args(template_arg).items()]
    cfg = load_config(config, sets)
    train_from_config(cfg, force=force, log=lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True))


@command
def eval_(
    model: Annotated[str, typer.Option(help="Model folder (or hub id) to evaluate.")],
    data: Annotated[list[str], typer.Option(help="Held-out conversations; the last assistant turn is the reference.")],
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    sample: Annotated[bool, typer.Option(help="Sample (temperature) instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(min=0.01)] = 1.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N conversations only.")] = None,
    skip_invalid: Annotated[bool, typer.Option()] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    show: Annotated[int, typer.Option(min=0, help="Print N generations.")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    template_arg: TemplateArgs = None,
    tools: ToolsFile = None,
) -> None:
    """Measure stop rate, runaway rate, role leaks, lengths and exact match (per kind of reply when the held-out
    replies include tool calls)."""
    import torch

    from eosguard.conversations import load_conversations
    from eosguard.evaluate import evaluate_stopping
    from eosguard.progress import progress
    from eosguard.render import ChatRenderer
    from eosguard.templates import KIND_NAMES, with_arguments
    from eosguard.tokenizer_setup import load_tokenizer
    from eosguard.train import load_model

    args, offered = _template_args(template_arg), _tools(tools)
    convs, rep = load_conversations(data, skip_invalid=skip_invalid)
    tok = load_tokenizer(model)
    if args:
        tok.chat_template = with_arguments(tok.chat_template or "", args)
    renderer = ChatRenderer(tok, tools=offered)
    torch.manual_seed(seed)
    m = load_model(model)
    with progress("generating", total=len(convs[:limit])) as advance:
        result = evaluate_stopping(
            m,
            tok,
            convs[:limit],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=sample,
            temperature=temperature,
            advance=advance,
            renderer=renderer,
        )
    if as_json:
        print(json.dumps({"data": rep.summary(), **result.to_dict()}, indent=2))
        return
    console.print(f"data: {rep.summary()}", highlight=False)
    table = Table(title=f"stopping on {result.n} prompts ({max_new_tokens} new tokens at most)")
    for col in ("replies", "n", "stop rate", "runaway", "role leak", "exact match", "mean new tokens", "p95"):
        table.add_column(col)
    rows = [("all", result.to_dict())] + [(KIND_NAMES[k], v) for k, v in result.by_kind.items()]
    for name, fig in rows:
        em = "-" if fig["exact_match"] is None else f"{fig['exact_match']:.1%}"
        table.add_row(
            name,
            str(fig["n"]),
            f"{fig['stop_rate']:.1%}",
            f"{fig['runaway_rate']:.1%}",
            f"{fig['role_leak_rate']:.1%}",
            em,
            f"{fig['mean_new_tokens']:.1f}",
            f"{fig['p95_new_tokens']:.0f}",
        )
    console.print(table)
    for g in result.generations[:show]:
        console.print(
            f"[bold]{g.prompt!r}[/] -> {g.output!r} {'(stopped)' if g.stopped else '(no stop)'}", highlight=False
        )


@command
def demo(
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.png/.html and the models.")] = Path(
        "eosguard-demo"
    ),
    quick: Annotated[bool, typer.Option(help="A smaller, faster run (for smoke tests; figures are weaker).")] = False,
    model: Annotated[
        str, typer.Option(help="tiny: a tiny Mistral trained here; smollm2: the real SmolLM2-135M-Instruct.")
    ] = "tiny",
) -> None:
    """The bug report, broken setup and fix side by side: pad = eos vs eosguard, same model, data, steps and seed."""
    from eosguard.demo import DemoSettings, RealDemoSettings, run_demo, run_real_demo

    log = lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    if model == "smollm2":
        report = run_real_demo(out, RealDemoSettings.quick() if quick else RealDemoSettings(), log=log)
    elif model == "tiny":
        report = run_demo(out, DemoSettings.quick() if quick else DemoSettings(), log=log)
    else:
        raise EosguardError(f"--model {model!r}: expected tiny or smollm2")
    console.print((out / "report.md").read_text(), highlight=False, markup=False)
    seconds = report["total_seconds"]
    console.print(f"wrote {out}/report.html (open it), report.json, report.md, report.png ({seconds:.0f}s)")


@command
def prepare(
    data: Annotated[list[str], typer.Argument(help="Conversation files or folders.")],
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or hub id.")],
    out: Annotated[Path, typer.Option(help="Output folder (loads with datasets.load_from_disk).")],
    max_length: Annotated[int, typer.Option(min=9)] = 2048,
    over_length: Annotated[OverLength, typer.Option(help="drop | truncate | error")] = "truncate",
    train_on: Annotated[TrainOn, typer.Option(help="all | last | each (one example per reply)")] = "all",
    skip_invalid: Annotated[bool, typer.Option()] = False,
    num_proc: Annotated[
        int | None, typer.Option(min=1, help="Processes that render and tokenize (default: one per core).")
    ] = None,
    template_arg: TemplateArgs = None,
    tools: ToolsFile = None,
) -> None:
    """Tokenize conversations into input_ids / labels columns (labels: each reply and its closing tokens)."""
    from eosguard.prepare import prepare_dataset

    summary = prepare_dataset(
        data,
        tokenizer,
        out,
        max_length=max_length,
        over_length=over_length,
        train_on=train_on,
        skip_invalid=skip_invalid,
        num_proc=num_proc,
        template_args=_template_args(template_arg),
        tools=_tools(tools),
    )
    for line in summary:
        console.print(line, highlight=False)


def main() -> None:
    """Console entry point (every command turns user errors into a message and an exit code, see `command`)."""
    app()


if __name__ == "__main__":
    main()
