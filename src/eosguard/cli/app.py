"""The `eosguard` command table: each command parses its options and calls one library function.

    eosguard demo         -> eosguard.recipes.demo.demo                  the bug and the fix side by side (main job)
    eosguard doctor       -> eosguard.recipes.doctor.doctor              every way a setup loses the stop token
    eosguard train        -> eosguard.recipes.train.train_from_config    fine-tune with the stop token guaranteed
    eosguard prepare      -> eosguard.recipes.prepare.prepare_dataset    conversations to a tokenized `datasets` folder
    eosguard eval         -> eosguard.serve.evaluation.evaluate          whether a model stops, in any engine
    eosguard export gguf  -> eosguard.serve.export.export_gguf           a GGUF whose stop metadata is proven
    eosguard fix          -> eosguard.recipes.fix.fix                    metadata repaired, measured before and after

Options are declared once (`eosguard.cli.args`); output goes through one printer (`eosguard.cli.show`). Exit codes: 0
ok; 1 the stop token is lost or not stopped on (a doctor error, or training refused because of one); 2 bad usage or
unreadable input; 3 the collator guard stopped training. User errors print a message, never a traceback.

Run as:
    eosguard --help
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from eosguard.base.errors import EXIT_FINDINGS, EosguardError, PeerFailed
from eosguard.cli import args as a
from eosguard.cli import show

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Chat-model fine-tuning that guarantees the model learns to stop.",
)
export_app = typer.Typer(no_args_is_help=True, help="Export a trained model folder for a serving engine.")
app.add_typer(export_app, name="export")

EXAMPLES: dict[str, str] = {
    "demo": "eosguard demo --model smollm2 --out eosguard-demo",
    "doctor": "eosguard doctor --tokenizer PATH --data chats.jsonl --collator transformers --html labels.html",
    "train": "eosguard train config.yaml --template-arg enable_thinking=false",
    "prepare": "eosguard prepare chats.jsonl --tokenizer PATH --out prepared/ --tools tools.json",
    "eval": "eosguard eval --model runs/x/model --data heldout.jsonl --engine llamacpp --json",
    "export gguf": "eosguard export gguf --model runs/x/model --out model.gguf --ollama",
    "fix": "eosguard fix --model downloaded/model --out fixed/ --data heldout.jsonl",
}
"""One example line per command: shown under its --help, and in the README's command table (a test pins both)."""


def command(fn: Callable[..., None] | None = None, *, group: typer.Typer = app, prefix: str = "") -> Any:
    """Register a command; the one place a user error becomes a message and its exit code (never a traceback)."""
    if fn is None:
        return functools.partial(command, group=group, prefix=prefix)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except EosguardError as exc:
            if not isinstance(exc, PeerFailed):  # rank 0 printed a peer's error; this rank exits with its code
                show.error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    name = fn.__name__.rstrip("_")
    return group.command(name=name, epilog=f"Example: {EXAMPLES[prefix + name]}")(run)


def _template_args(items: list[str] | None) -> dict[str, Any]:
    from eosguard.chat.template_args import parse_template_args

    return parse_template_args(items or [])


def _tools(path: Path | None) -> list[dict[str, Any]] | None:
    from eosguard.data.records import load_tools

    return list(load_tools(path)) if path else None


def _held_out(data: list[str], skip_invalid: bool, limit: int | None = None) -> tuple[list[Any], str]:
    from eosguard.data.records import load_conversations

    convs, report = load_conversations(data, skip_invalid=skip_invalid)
    return convs[:limit], report.summary()


@command
def doctor(
    tokenizer: a.Tokenizer = None,
    model: a.Model = None,
    data: a.Data = None,
    max_length: Annotated[int | None, typer.Option(min=9, help=a.MAX_LENGTH_HELP)] = None,
    collator: Annotated[str, typer.Option(help="eosguard | transformers | trl | MODULE:FACTORY")] = "eosguard",
    compare: Annotated[str | None, typer.Option(help="A second collator beside --collator (e.g. eosguard).")] = None,
    lora: Annotated[
        bool, typer.Option("--lora", help="The run uses LoRA without training the embedding rows.")
    ] = False,
    skip_invalid: a.SkipInvalid = False,
    show_n: a.Show = 0,
    html: Annotated[Path | None, typer.Option(help="Write the label viewer: one self-contained HTML page.")] = None,
    as_json: a.Json = False,
    trust_remote_code: a.TrustRemoteCode = False,
    template_arg: a.TemplateArgs = None,
    tools: a.Tools = None,
    gguf: Annotated[
        Path | None, typer.Option(help="A GGUF file: what llama.cpp / Ollama stop on (with --tokenizer: as trained).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="An axolotl or LLaMA-Factory training config: its stop-token settings, its data."),
    ] = None,
    modelfile: Annotated[
        Path | None,
        typer.Option(help="An Ollama Modelfile: its TEMPLATE and stop lines (with --tokenizer: as trained)."),
    ] = None,
    prepared: Annotated[
        Path | None,
        typer.Option(
            help="Rows another tool wrote (a `datasets` folder, parquet, JSONL or Arrow: input_ids with labels, "
            "assistant_masks or completion_mask; without any, --collator builds the labels)."
        ),
    ] = None,
) -> None:
    """Find every way this setup loses the stop token. Exit 1 on an error finding (of --collator's pipeline)."""
    from eosguard.recipes.doctor import doctor as run_doctor

    reports = run_doctor(
        tokenizer=tokenizer,
        model=model,
        data=data or (),
        max_length=max_length,
        collator=collator,
        compare=compare,
        lora=lora,
        skip_invalid=skip_invalid,
        show=show_n,
        html=html,
        tools=_tools(tools),
        template_args=_template_args(template_arg),
        gguf=gguf,
        modelfile=modelfile,
        config=config,
        prepared=prepared,
        trust_remote_code=trust_remote_code,
    )
    first = reports[0][1]
    if as_json:
        doc = first.to_dict()
        if len(reports) > 1:
            doc["compare"] = {"collator": reports[1][0], **reports[1][1].to_dict()}
        show.as_json(doc)
    else:
        for name, report in reports:
            show.doctor_report(report, f"pipeline: collator {name!r}" if len(reports) > 1 else None)
        if html:
            show.lines([f"\nwrote {html} (the label viewer: open it in a browser)"])
    raise typer.Exit(EXIT_FINDINGS if first.has_errors else 0)


@command
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (every key: docs/training.md).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set lr=1e-4 --set data.train=[a.jsonl]")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Train even when the doctor finds errors (loudly).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")] = False,
    template_arg: a.TemplateArgs = None,
) -> None:
    """Fine-tune a chat model in its own chat template on transformers.Trainer; refuses to start on doctor errors."""
    from eosguard.recipes.config import load_config
    from eosguard.recipes.train import train_from_config

    sets = list(set_ or []) + (["resume=true"] if resume else [])
    sets += [f"chat_template_kwargs.{k}={json.dumps(v)}" for k, v in _template_args(template_arg).items()]
    train_from_config(load_config(config, sets), force=force, log=show.log)


@command
def eval_(
    data: a.HeldOut,
    model: a.Model = None,
    engine: Annotated[
        a.Engine, typer.Option(help="transformers (generate) | llamacpp (llama.cpp's server in process, from a GGUF).")
    ] = "transformers",
    endpoint: Annotated[
        str | None, typer.Option(help="An OpenAI-compatible server (vLLM, llama-server, Ollama, TGI): its base URL.")
    ] = None,
    tokenizer: a.Tokenizer = None,
    max_new_tokens: a.MaxNewTokens = a.MAX_NEW_TOKENS,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together (transformers).")] = 32,
    sample: Annotated[bool, typer.Option("--sample", help="Sample (temperature) instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(min=0.01)] = 1.0,
    stop_on: Annotated[
        a.StopOn,
        typer.Option(
            help="transformers: stop on the template's stop tokens (template: do the weights stop?) or on the "
            "folder's own generation_config.json (model: what generate() and vLLM stop on)."
        ),
    ] = "template",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N conversations only.")] = None,
    skip_invalid: a.SkipInvalid = False,
    as_json: a.Json = False,
    show_n: a.Show = 0,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    template_arg: a.TemplateArgs = None,
    tools: a.Tools = None,
) -> None:
    """Measure stop rate, runaway rate, role leaks, lengths and exact match (per kind of reply when the held-out
    replies include tool calls), in transformers or where the model is served."""
    from eosguard.base.progress import progress
    from eosguard.serve.evaluation import EvalSettings, evaluate

    convs, summary = _held_out(data, skip_invalid, limit)
    settings = EvalSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sample=sample,
        temperature=temperature,
        seed=seed,
        stop_on=stop_on,
        template_args=_template_args(template_arg),
        tools=_tools(tools),
    )
    with progress("generating", total=len(convs)) as advance:
        result = evaluate(
            convs,
            model=model,
            engine=engine,
            endpoint=endpoint,
            tokenizer=tokenizer,
            settings=settings,
            advance=advance,
        )
    if as_json:
        show.as_json({"data": summary, **result.to_dict(with_generations=True)})
        return
    show.lines([f"data: {summary}; engine: {result.engine}"])
    show.stop_table(result, max_new_tokens)
    show.generations(result, show_n)


@command
def fix(
    model: a.ModelPath,
    out: a.Out,
    data: a.Data = None,
    template: Annotated[
        str | None, typer.Option(help="A chat template for a model that has none: chatml, or a tokenizer folder.")
    ] = None,
    max_new_tokens: a.MaxNewTokens = a.MAX_NEW_TOKENS,
    add_pad: Annotated[
        bool,
        typer.Option("--add-pad", help="Add a new pad token (one more embedding row) where no existing one can pad."),
    ] = False,
) -> None:
    """Repair the stop metadata that needs no training (eos, pad, generation config, GGUF eos / eot), then measure
    whether the weights themselves stop. No tensor changes shape unless --add-pad. --out: the repaired copy (a new
    folder or file)."""
    from eosguard.recipes.fix import fix as run_fix

    report = run_fix(model, out, data=data, template=template, max_new_tokens=max_new_tokens, add_pad=add_pad)
    show.lines(report.lines())


@command(group=export_app, prefix="export ")
def gguf(
    model: a.ModelPath,
    out: a.Out,
    outtype: Annotated[a.OutType, typer.Option(help="The weights' type in the file.")] = "f16",
    ollama: Annotated[
        bool, typer.Option("--ollama", help="Also write an Ollama Modelfile: its TEMPLATE and stop lines.")
    ] = False,
) -> None:
    """Convert with llama.cpp's converter, then prove (and where needed correct) the stop metadata an engine reads.
    --out: the GGUF file to write."""
    from eosguard.serve.export import export_gguf

    report = export_gguf(model, out, outtype=outtype, ollama=ollama, log=lambda s: show.lines([s], to_stderr=True))
    show.lines(report.lines())


@command
def demo(
    out: Annotated[Path, typer.Option(help=a.OUT_HELP)] = Path("eosguard-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A smaller, faster run (figures are weaker).")] = False,
    model: Annotated[
        a.DemoModel, typer.Option(help="tiny: a tiny Mistral trained here; smollm2: the real SmolLM2-135M-Instruct.")
    ] = "tiny",
) -> None:
    """The bug report, broken setup and fix side by side: pad = eos vs eosguard, same model, data, steps and seed.
    --out: a folder for report.json / .md / .png / .html and the models."""
    from eosguard.recipes.demo import demo as run_demo

    report = run_demo(out, model, quick=quick, log=show.log)
    show.lines([(out / "report.md").read_text()])
    show.lines(
        [f"wrote {out}/report.html (open it), report.json, report.md, report.png ({report['total_seconds']:.0f}s)"]
    )


@command
def prepare(
    data: Annotated[list[str], typer.Argument(help="Conversations: JSONL files or `datasets` folders.")],
    tokenizer: a.Tokenizer,
    out: a.Out,
    max_length: Annotated[int, typer.Option(min=9, help=a.MAX_LENGTH_HELP)] = 2048,
    over_length: Annotated[
        a.OverLength, typer.Option(help="Longer examples: drop, truncate keeping the stop token, or error.")
    ] = "truncate",
    train_on: Annotated[a.TrainOn, typer.Option(help="all | last | each (one example per reply)")] = "all",
    skip_invalid: a.SkipInvalid = False,
    num_proc: Annotated[
        int | None, typer.Option(min=1, help="Processes that render and tokenize (default: one per core).")
    ] = None,
    template_arg: a.TemplateArgs = None,
    tools: a.Tools = None,
) -> None:
    """Tokenize conversations into input_ids / labels columns (labels: each reply and its closing tokens). --out: a
    folder that loads with datasets.load_from_disk."""
    from eosguard.chat.settings import RenderSettings
    from eosguard.recipes.prepare import prepare_dataset

    settings = RenderSettings(
        max_length=max_length,
        over_length=over_length,
        train_on=train_on,
        tools=_tools(tools),
        template_args=_template_args(template_arg),
        skip_invalid=skip_invalid,
    )
    show.lines(prepare_dataset(data, tokenizer, out, settings, num_proc=num_proc))


def main() -> None:
    """Console entry point (every command turns user errors into a message and an exit code, see `command`)."""
    app()
