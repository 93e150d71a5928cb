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

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer import rich_utils

from eosguard.errors import EXIT_FINDINGS, EosguardError
from eosguard.render import OverLength, TrainOn

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Chat-model fine-tuning that guarantees the model learns to stop.",
)
# On a terminal rich fits its width; in a pipe or a log it would wrap tables (and --help's option descriptions) at 80
# columns, 12 characters a line, so lines run long there instead.
PIPE_WIDTH = 160
console = Console(stderr=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)
if not sys.stdout.isatty() and rich_utils.MAX_WIDTH is None:
    rich_utils.MAX_WIDTH = PIPE_WIDTH

EXAMPLES: dict[str, str] = {
    "demo": "eosguard demo --model smollm2 --out eosguard-demo",
    "doctor": "eosguard doctor --tokenizer PATH --data chats.jsonl --collator transformers --html labels.html",
    "train": "eosguard train config.yaml --template-arg enable_thinking=false",
    "prepare": "eosguard prepare chats.jsonl --tokenizer PATH --out prepared/ --tools tools.json",
    "eval": "eosguard eval --model runs/x/model --data heldout.jsonl --engine llamacpp --json",
    "export gguf": "eosguard export gguf runs/x/model --out model.gguf --ollama",
    "fix": "eosguard fix downloaded/model --out fixed/ --data heldout.jsonl",
}
"""One example line per command: shown under its --help, and in the README's command table (a test pins both)."""


export_app = typer.Typer(no_args_is_help=True, help="Export a trained model folder for a serving engine.")
app.add_typer(export_app, name="export")


def command(fn: Callable[..., None] | None = None, *, group: typer.Typer = app, prefix: str = "") -> Any:
    """Register a command; the one place a user error becomes a message and its exit code (never a traceback)."""
    if fn is None:
        return functools.partial(command, group=group, prefix=prefix)

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

    name = fn.__name__.rstrip("_")
    return group.command(name=name, epilog=f"Example: {EXAMPLES[prefix + name]}")(run)


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
    from eosguard.template_args import parse_template_args

    return parse_template_args(items or [])


def _tools(path: Path | None) -> list[dict[str, Any]] | None:
    from eosguard.records import load_tools

    return list(load_tools(path)) if path else None


@command
def doctor(
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer folder or hub id (only tokenizer files are read).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model folder: config.json / generation_config.json are read.")
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option(help="Conversations (JSONL or datasets folder); repeatable.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(min=1, help="Training max length, for truncation checks.")] = None,
    collator: Annotated[str, typer.Option(help="eosguard | transformers | trl | MODULE:FACTORY")] = "eosguard",
    lora: Annotated[
        bool, typer.Option("--lora", help="The run uses LoRA without training the embedding rows.")
    ] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip malformed records (counted) instead of stopping.")
    ] = False,
    show: Annotated[int, typer.Option(min=0, help="Print N collated examples token by token.")] = 0,
    html: Annotated[
        Path | None, typer.Option(help="Write the label viewer: one self-contained HTML page (findings, tokens).")
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="A second collator to show beside --collator (e.g. --compare eosguard).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow tokenizer code from the repo.")
    ] = False,
    template_arg: TemplateArgs = None,
    tools: ToolsFile = None,
    gguf: Annotated[
        Path | None,
        typer.Option(
            help="A GGUF file: what llama.cpp / Ollama will stop on (with --tokenizer: the trained template)."
        ),
    ] = None,
) -> None:
    """Find every way this setup loses the stop token. Exit 1 on an error finding (of --collator's pipeline)."""
    if gguf is not None:
        return _doctor_gguf(gguf, tokenizer or model, as_json)
    if tokenizer is None:
        raise EosguardError("give --tokenizer (a training setup) or --gguf (a converted model)")
    from eosguard.doctor import diagnose
    from eosguard.loading import load_tokenizer
    from eosguard.records import load_conversations

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


def _doctor_gguf(path: Path, folder: str | None, as_json: bool) -> None:
    from eosguard.gguf_doctor import diagnose_gguf
    from eosguard.loading import load_tokenizer

    report = diagnose_gguf(path, load_tokenizer(folder) if folder else None)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_doctor(report)
    raise typer.Exit(EXIT_FINDINGS if report.has_errors else 0)


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
    verdict = report.verdict()
    if not report.findings:
        console.print(f"\n[{'yellow' if report.skipped else 'green'}]{escape(verdict)}[/]", highlight=False)
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
    if report.skipped:
        console.print(f"[yellow]{escape(verdict)}[/]", highlight=False)


@command
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see README: 'Fine-tune your own model').")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set lr=1e-4 --set data.train=[a.jsonl]")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Train even when the doctor finds errors (loudly).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")] = False,
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
    data: Annotated[list[str], typer.Option(help="Held-out conversations; the last assistant turn is the reference.")],
    model: Annotated[
        str | None,
        typer.Option(help="Model folder or hub id; with --engine llamacpp a GGUF file or a folder (converted first)."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="transformers (generate) | llamacpp (llama.cpp's server, in process, from a GGUF).")
    ] = "transformers",
    endpoint: Annotated[
        str | None, typer.Option(help="An OpenAI-compatible server (vLLM, llama-server, Ollama, TGI): its base URL.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="With --endpoint: the model's tokenizer, to count role leaks.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    sample: Annotated[bool, typer.Option("--sample", help="Sample (temperature) instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(min=0.01)] = 1.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N conversations only.")] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip malformed records (counted) instead of stopping.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    show: Annotated[int, typer.Option(min=0, help="Print N generations.")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    stop_on: Annotated[
        Literal["template", "model"],
        typer.Option(
            help="transformers: stop on the template's stop tokens (template: do the weights stop?) or on the "
            "folder's own generation_config.json (model: what generate() and vLLM stop on)."
        ),
    ] = "template",
    template_arg: TemplateArgs = None,
    tools: ToolsFile = None,
) -> None:
    """Measure stop rate, runaway rate, role leaks, lengths and exact match (per kind of reply when the held-out
    replies include tool calls), with transformers or where the model is served."""
    from eosguard.progress import progress
    from eosguard.records import load_conversations

    args, offered = _template_args(template_arg), _tools(tools)
    convs, rep = load_conversations(data, skip_invalid=skip_invalid)
    convs = convs[:limit]
    with progress("generating", total=len(convs)) as advance:
        if endpoint is not None or engine == "llamacpp":
            result, where = _eval_served(model, endpoint, tokenizer, convs, max_new_tokens, args, offered, advance)
        elif engine == "transformers":
            if model is None:
                raise EosguardError("give --model (a model folder or hub id)")
            result, where = (
                _eval_transformers(
                    model, convs, max_new_tokens, batch_size, sample, temperature, seed, args, offered, advance, stop_on
                ),
                "transformers" + (" (stopping on the model's generation config)" if stop_on == "model" else ""),
            )
        else:
            raise EosguardError(f"--engine {engine!r}: expected transformers or llamacpp")
    if as_json:
        print(json.dumps({"data": rep.summary(), "engine": where, **result.to_dict(with_generations=True)}, indent=2))
        return
    console.print(f"data: {rep.summary()}; engine: {where}", highlight=False)
    _print_stop_table(result, max_new_tokens)
    for g in result.generations[:show]:
        console.print(
            f"[bold]{g.prompt!r}[/] -> {g.output!r} {'(stopped)' if g.stopped else '(no stop)'}", highlight=False
        )


def _eval_transformers(
    model: str,
    convs: list[Any],
    max_new_tokens: int,
    batch_size: int,
    sample: bool,
    temperature: float,
    seed: int,
    args: dict[str, Any],
    offered: list[dict[str, Any]] | None,
    advance: Callable[[int], None],
    stop_on: str = "template",
) -> Any:
    import torch

    from eosguard.evaluate import evaluate_stopping
    from eosguard.loading import load_model, load_tokenizer
    from eosguard.render import ChatRenderer
    from eosguard.template_args import with_arguments

    tok = load_tokenizer(model)
    if args:
        tok.chat_template = with_arguments(tok.chat_template or "", args)
    torch.manual_seed(seed)
    loaded = load_model(model)
    eos = loaded.generation_config.eos_token_id if loaded.generation_config is not None else None
    stops = ([eos] if isinstance(eos, int) else list(eos or [])) if stop_on == "model" else None
    return evaluate_stopping(
        loaded,
        tok,
        convs,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=sample,
        temperature=temperature,
        advance=advance,
        renderer=ChatRenderer(tok, tools=offered),
        stop_ids=stops,
    )


def _eval_served(
    model: str | None,
    endpoint: str | None,
    tokenizer: str | None,
    convs: list[Any],
    max_new_tokens: int,
    args: dict[str, Any],
    offered: list[dict[str, Any]] | None,
    advance: Callable[[int], None],
) -> tuple[Any, str]:
    import tempfile

    from eosguard.engines import Endpoint, LlamaCpp, evaluate_served, role_leaks
    from eosguard.gguf_files import gguf_tokenizer
    from eosguard.loading import load_tokenizer

    if endpoint is not None:
        engine, tok = Endpoint(endpoint, model=model), (load_tokenizer(tokenizer) if tokenizer else None)
    else:
        if model is None:
            raise EosguardError("--engine llamacpp needs --model: a GGUF file, or a model folder to convert")
        path = Path(model)
        if path.is_dir():
            from eosguard.export import export_gguf

            path = export_gguf(path, Path(tempfile.mkdtemp(prefix="eosguard-eval-")) / "model.gguf").path
        engine, tok = LlamaCpp(path), gguf_tokenizer(path)
    with contextlib.closing(engine):
        result = evaluate_served(
            engine,
            convs,
            max_new_tokens=max_new_tokens,
            tools=offered,
            template_args=args,
            leaks=None if tok is None else role_leaks(tok),
            advance=advance,
        )
    return result, engine.name


def _print_stop_table(result: Any, max_new_tokens: int) -> None:
    from eosguard.templates import KIND_NAMES

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


@command
def fix(
    target: Annotated[Path, typer.Argument(help="A model folder or a GGUF file trained elsewhere.")],
    out: Annotated[Path, typer.Option(help="Where the repaired copy goes (a new folder or file).")],
    data: Annotated[
        list[str] | None, typer.Option(help="Held-out conversations: measure the stop rate before and after.")
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="A chat template for a model that has none: chatml, or a tokenizer folder.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    add_pad: Annotated[
        bool,
        typer.Option("--add-pad", help="Add a new pad token (one more embedding row) where no existing token can pad."),
    ] = False,
) -> None:
    """Repair the stop metadata that needs no training (eos, pad, generation config, GGUF eos / eot), then measure
    whether the weights themselves stop. No tensor changes shape unless --add-pad."""
    from eosguard.fix import fix as run_fix

    report = run_fix(target, out, data=data, template=template, max_new_tokens=max_new_tokens, add_pad=add_pad)
    for line in report.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@command(group=export_app, prefix="export ")
def gguf(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (safetensors, tokenizer with its chat template).")],
    out: Annotated[Path, typer.Option(help="The GGUF file to write.")],
    outtype: Annotated[str, typer.Option(help="f16 | bf16 | q8_0 | f32")] = "f16",
    ollama: Annotated[
        bool, typer.Option("--ollama", help="Also write an Ollama Modelfile with its stop lines.")
    ] = False,
) -> None:
    """Convert with llama.cpp's converter, then prove (and where needed correct) the stop metadata an engine reads."""
    from eosguard.export import export_gguf

    report = export_gguf(model_dir, out, outtype=outtype, ollama=ollama, log=lambda s: err.print(s, highlight=False))
    for line in report.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@command
def demo(
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.png/.html and the models.")] = Path(
        "eosguard-demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller, faster run (for smoke tests; figures are weaker).")
    ] = False,
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
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip malformed records (counted) instead of stopping.")
    ] = False,
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
