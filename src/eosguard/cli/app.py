"""The `eosguard` command table: each command parses its options and calls one library function.

    eosguard demo         -> eosguard.recipes.demos.demo                 the bug and the fix side by side (main job)
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
from typing import Any

import click
import typer

from eosguard.base.errors import EXIT_FINDINGS, EXIT_INTERNAL, EosguardError, PeerFailed, internal_error
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

PASSED_THROUGH = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)
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
        except PASSED_THROUGH:  # typer's and click's own exits: already an exit code
            raise
        except Exception as exc:  # eosguard's own failure: its own exit code, never 1 ("the stop token is lost")
            show.error(internal_error(exc))
            raise typer.Exit(EXIT_INTERNAL) from None

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
    prepared: a.Prepared = None,
    config: a.TrainingConfigFile = None,
    gguf: a.Gguf = None,
    modelfile: a.Modelfile = None,
    max_length: a.DoctorMaxLength = None,
    truncation_mode: a.TruncationModeOption = "keep_start",
    collator: a.Collator = "eosguard",
    compare: a.Compare = None,
    lora: a.Lora = False,
    skip_invalid: a.SkipInvalid = False,
    show_n: a.Show = 0,
    html: a.Html = None,
    tools: a.Tools = None,
    template_arg: a.TemplateArgs = None,
    trust_remote_code: a.TrustRemoteCode = False,
    as_json: a.Json = False,
) -> None:
    """Find every way this setup loses the stop token. Exit 1 on an error finding (of --collator's pipeline)."""
    from eosguard.recipes.doctor import DoctorOptions
    from eosguard.recipes.doctor import doctor as run_doctor

    options = DoctorOptions(
        tokenizer=tokenizer, model=model, data=tuple(data or ()), prepared=prepared, config=config, gguf=gguf,
        modelfile=modelfile, max_length=max_length, collator=collator, compare=compare, lora=lora,
        skip_invalid=skip_invalid, show=show_n, html=html, tools=tools, template_args=_template_args(template_arg),
        trust_remote_code=trust_remote_code, truncation_mode=truncation_mode,
    )  # fmt: skip
    reports = run_doctor(options)
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
    config: a.TrainConfigFile,
    set_: a.Sets = None,
    force: a.Force = False,
    resume: a.Resume = False,
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
    engine: a.EngineOption = "transformers",
    endpoint: a.Endpoint = None,
    tokenizer: a.Tokenizer = None,
    max_new_tokens: a.MaxNewTokens = a.MAX_NEW_TOKENS,
    batch_size: a.BatchSize = 32,
    sample: a.Sample = False,
    temperature: a.Temperature = 1.0,
    stop_on: a.StopOnOption = "template",
    limit: a.Limit = None,
    skip_invalid: a.SkipInvalid = False,
    as_json: a.Json = False,
    show_n: a.Show = 0,
    seed: a.Seed = 0,
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
    template: a.FixTemplate = None,
    max_new_tokens: a.MaxNewTokens = a.MAX_NEW_TOKENS,
    add_pad: a.AddPad = False,
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
    outtype: a.OutTypeOption = "f16",
    ollama: a.Ollama = False,
) -> None:
    """Convert with llama.cpp's converter, then prove (and where needed correct) the stop metadata an engine reads.
    --out: the GGUF file to write."""
    from eosguard.serve.export import export_gguf

    report = export_gguf(model, out, outtype=outtype, ollama=ollama, log=lambda s: show.lines([s], to_stderr=True))
    show.lines(report.lines())


@command
def demo(
    out: a.OutOption = Path("eosguard-demo"),
    quick: a.Quick = False,
    model: a.DemoModelOption = "tiny",
    stage: a.DemoStageOption = "sft",
) -> None:
    """The bug report, broken setup and fix side by side: pad = eos vs eosguard, same model, data, steps and seed.
    --out: a folder for report.json / .md / .png / .html and the models."""
    from eosguard.recipes.demos import demo as run_demo

    report = run_demo(out, model, stage=stage, quick=quick, log=show.log)
    show.lines([(out / "report.md").read_text()])
    show.lines(
        [f"wrote {out}/report.html (open it), report.json, report.md, report.png ({report['total_seconds']:.0f}s)"]
    )


@command
def prepare(
    data: a.PrepareData,
    tokenizer: a.Tokenizer,
    out: a.Out,
    max_length: a.MaxLength = 2048,
    over_length: a.OverLengthOption = "truncate",
    train_on: a.TrainOnOption = "all",
    skip_invalid: a.SkipInvalid = False,
    num_proc: a.NumProc = None,
    template_arg: a.TemplateArgs = None,
    tools: a.Tools = None,
) -> None:
    """Tokenize conversations into input_ids / labels columns (labels: each reply and its closing tokens), or
    preference records into TRL's prompt_ids / chosen_ids / rejected_ids (KTO: completion_ids, label). --out: a
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
