"""Self-contained HTML pages a person opens or shares: the label viewer (`doctor --html`) and the run reports.

Every page is one file with its styles inline, figures as inline SVG or embedded PNG, no script and nothing fetched
from the network, so it opens the same from a laptop, a CI artifact or an e-mail. The pieces (`section`, `table`,
`findings_table`, `examples_html`, `generations_table`, `figure_svg`, `figure_png`) are shared by the doctor, `eosguard
train` and `eosguard demo`; each caller assembles its page top to bottom.

Styles of a collated token (the legend of every label viewer): trained (label = its id, loss taken), masked (-100),
padding (attention mask 0), and the end-of-turn token outlined in either of the first two, so the seed's bug is one
glance: under pad = eos with `DataCollatorForLanguageModeling` every end-of-turn is grey.

Run as:
    eosguard doctor --tokenizer PATH --collator transformers --compare eosguard --html labels.html
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from eosguard.checks.tokenview import TokenView, visible

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; } h3 { font-size: 15px; }
.sub { color: #555; margin-bottom: 16px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { border: 1px solid #ccc; padding: 4px 8px;
  text-align: left; vertical-align: top; } th { background: #f3f3f3; }
.steps { list-style: none; padding: 0; } .steps li { margin: 2px 0; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; } .skip { color: #9a6700; }
.sev-error { color: #c62828; font-weight: bold; } .sev-warning { color: #9a6700; font-weight: bold; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 24px; }
.legend { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0 12px; }
.example { font: 13px/1.9 ui-monospace, "SFMono-Regular", Menlo, monospace; white-space: pre-wrap;
  border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; margin: 8px 0 16px; word-break: break-all; }
.tok { white-space: pre-wrap; border-radius: 3px; padding: 1px 0; margin-right: 1px; }
.tok.trained { background: rgb(182, 234, 190); color: #0b3d17; }
.tok.masked { background: rgb(234, 234, 234); color: #666666; }
.tok.pad { background: repeating-linear-gradient(45deg, #fafafa, #fafafa 3px, #e4e4e4 3px, #e4e4e4 6px);
  color: #aaaaaa; font-style: italic; }
.tok.eot { outline: 2px solid rgb(26, 127, 55); font-weight: bold; }
.tok.eot.masked { outline: 2px dashed rgb(198, 40, 40); }
.stop { background: rgb(182, 234, 190); border-radius: 3px; padding: 0 3px; font-weight: bold; }
.nostop { color: #c62828; font-weight: bold; }
pre { background: #f6f8fa; padding: 8px; border-radius: 6px; overflow-x: auto; }
figure { margin: 8px 0; } figure svg, figure img { max-width: 100%; height: auto; }
"""

KIND_TITLES = {"trained": "trained (loss taken)", "masked": "masked (label -100)", "pad": "padding"}


def e(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def page(title: str, subtitle: str, body: Iterable[str]) -> str:
    """A complete HTML document: inline styles, no script, no external resource."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>'
        f'<style>{CSS}</style></head><body>\n<h1>{e(title)}</h1><div class="sub">{e(subtitle)}</div>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def section(title: str, *parts: str, css_id: str | None = None) -> str:
    anchor = f' id="{e(css_id)}"' if css_id else ""
    return f"<section{anchor}><h2>{e(title)}</h2>" + "".join(parts) + "</section>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False) -> str:
    """A table (no header row when `headers` is empty); cells are escaped unless `raw` (cells already HTML)."""
    head = f"<thead><tr>{''.join(f'<th>{e(h)}</th>' for h in headers)}</tr></thead>" if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{c if raw else e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def findings_table(findings: Sequence[dict[str, Any]], verdict: str = "no findings") -> str:
    """Findings as `DoctorReport.to_dict()["findings"]` gives them: severity, id, count, what, fix; with none, the
    report's verdict (`DoctorReport.verdict`: it names the steps that could not run)."""
    if not findings:
        return f'<p class="{"ok" if verdict.startswith("no findings") else "skip"}">{e(verdict)}</p>'
    rows = [
        (
            f'<span class="sev-{e(f["severity"])}">{e(f["severity"])}</span>',
            f"<code>{e(f['id'])}</code>",
            e(f.get("count", "")),
            e(f["message"]),
            e(f["fix"]),
        )
        for f in findings
    ]
    return table(["severity", "id", "count", "what", "fix"], rows, raw=True)


def steps_list(steps: Sequence[dict[str, Any]]) -> str:
    """Numbered doctor steps with ✓ / ✗ / – (skipped: could not run, never shown as passed)."""
    items = []
    for i, s in enumerate(steps, start=1):
        mark = (
            '<span class="skip">–</span>'
            if s["skipped"]
            else '<span class="ok">✓</span>'
            if s["ok"]
            else ('<span class="bad">✗</span>')
        )
        items.append(f"<li>{i}. {mark} <b>{e(s['title'])}</b>: {e(s['detail'])}</li>")
    return '<ul class="steps">' + "".join(items) + "</ul>"


def token_span(v: TokenView) -> str:
    classes = f"tok {v.kind}" + (" eot" if v.end_of_turn else "")
    label = "-100" if v.kind != "trained" else str(v.label)
    tip = f"id {v.id} · label {label} · {KIND_TITLES[v.kind]} · piece {v.piece!r}"
    text = v.piece if v.pad else visible(v.text) or "∅"
    return f'<span class="{classes}" data-id="{v.id}" data-label="{v.label}" title="{e(tip)}">{e(text)}</span>'


def _spans(views: Sequence[TokenView]) -> Iterator[str]:
    """Token spans; a run of more than 3 pads is one span (its count shown) so padding does not bury the text."""
    i = 0
    while i < len(views):
        j = i
        while j < len(views) and views[j].pad:
            j += 1
        if j - i > 3:
            v = views[i]
            tip = f"{j - i} padding positions · id {v.id} · label {v.label}"
            yield f'<span class="tok pad" data-count="{j - i}" title="{e(tip)}">{e(v.piece)} ×{j - i}</span>'
            i = j
        else:
            yield token_span(views[i])
            i += 1


def legend(end_of_turn: str | None) -> str:
    eot = e(end_of_turn or "end-of-turn")
    samples = [
        '<span class="tok trained">trained</span> loss taken (label = token id)',
        '<span class="tok masked">masked</span> label -100',
        '<span class="tok pad">pad</span> padding (attention mask 0)',
        f'<span class="tok trained eot">{eot}</span> end-of-turn, trained',
        f'<span class="tok masked eot">{eot}</span> end-of-turn, masked: the model never learns to stop',
    ]
    return '<div class="legend">' + "".join(f"<span>{s}</span>" for s in samples) + "</div>"


def examples_html(examples: Sequence[Sequence[TokenView]]) -> str:
    """Collated rows token by token (hover a token for its id and label)."""
    out = []
    for n, views in enumerate(examples, start=1):
        trained = sum(v.kind == "trained" for v in views)
        eots = [v for v in views if v.end_of_turn]
        eot_note = f", end-of-turn trained {sum(v.kind == 'trained' for v in eots)}/{len(eots)}" if eots else ""
        spans = "".join(_spans(views))
        out.append(
            f"<h3>example {n} <small>({len(views)} positions, {trained} trained{eot_note})</small></h3>"
            f'<div class="example" data-example="{n}">{spans}</div>'
        )
    return "".join(out)


def generations_table(prompts: Sequence[str], outputs: dict[str, Sequence[tuple[str, bool]]], eot: str) -> str:
    """Prompt by prompt, each run's output with the stop token shown when the model wrote it."""
    rows = []
    for i, prompt in enumerate(prompts):
        cells = [e(prompt)]
        for gens in outputs.values():
            text, stopped = gens[i]
            end = f'<span class="stop">{e(eot)}</span>' if stopped else '<span class="nostop">[no stop]</span>'
            cells.append(f"<code>{e(visible(text))}</code>{end}")
        rows.append(cells)
    return table(["prompt", *outputs], rows, raw=True)


def json_block(value: Any) -> str:
    return f"<pre>{e(json.dumps(value, indent=2, default=str))}</pre>"


def figure_svg(fig: Any, caption: str = "") -> str:
    """A matplotlib figure inlined as SVG (text stays text: searchable, sharp at any zoom)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: not allowed inside HTML
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def figure_png(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{data}"></figure>'


def doctor_page(reports: Sequence[tuple[str, Any]], tokenizer_name: str) -> str:
    """The label viewer: one column per pipeline (`DoctorReport`s), steps, findings with fixes, examples."""
    first = reports[0][1]
    eot = first.facts.get("end_of_turn")
    columns = []
    verdicts = []
    for name, report in reports:
        d = report.to_dict()
        col = report.facts.get("collator") or {}
        if col:
            verdicts.append(
                f"<li><b>{e(name)}</b>: {col['stop_trained']}/{col['supervised_turns']} end-of-turn tokens trained"
                + (" — <span class='bad'>the model never learns to stop</span>" if col["stop_masked"] else "")
                + "</li>"
            )
        columns.append(
            f'<div class="pipeline" data-pipeline="{e(name)}"><h2>pipeline: {e(name)}</h2>'
            + steps_list(d["steps"])
            + (examples_html(report.shown) or "<p>no examples collated (see the steps above)</p>")
            + "<h3>findings</h3>"
            + findings_table(d["findings"], d["verdict"])
            + "</div>"
        )
    subtitle = f"tokenizer {tokenizer_name}; end-of-turn {eot or 'not found'}; hover a token for its id and label"
    return page(
        "eosguard label viewer",
        subtitle,
        [
            "<ul class='steps'>" + "".join(verdicts) + "</ul>",
            legend(eot),
            f'<div class="columns">{"".join(columns)}</div>',
        ],
    )


def run_report_page(
    title: str,
    subtitle: str,
    *,
    summary: str,
    figures: Sequence[str],
    findings: dict[str, tuple[Sequence[dict[str, Any]], str]],
    tokenizer_lines: Sequence[str],
    prompts: Sequence[str],
    outputs: dict[str, Sequence[tuple[str, bool]]],
    end_of_turn: str,
    config: dict[str, Any],
) -> str:
    """The run report of `eosguard train` and `eosguard demo`: the same sections in the same order for both."""
    findings_html = "".join(f"<h3>{e(name)}</h3>{findings_table(*fs)}" for name, fs in findings.items())
    samples = (
        generations_table(prompts, outputs, end_of_turn)
        if prompts
        else "<p>no held-out conversations: nothing was generated (set data.eval or data.eval_fraction)</p>"
    )
    return page(
        title,
        subtitle,
        [
            section("summary", summary, css_id="summary"),
            section("loss and stopping", *figures, css_id="figures"),
            section(
                f"sample generations (greedy; {end_of_turn} shown where the model wrote it)", samples, css_id="samples"
            ),
            section("doctor findings", findings_html, css_id="findings"),
            section(
                "tokenizer choices",
                "<ul>" + "".join(f"<li>{e(line)}</li>" for line in tokenizer_lines) + "</ul>",
                css_id="tokenizer",
            ),
            section("configuration", json_block(config), css_id="config"),
        ],
    )


def training_figure(
    losses: Sequence[tuple[int, float]], stop_rates: Sequence[tuple[int, float]], end_of_turn: str
) -> Any:
    """Training loss by step and, when a stop-rate callback ran, the held-out stop rate by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if losses:
        ax1.plot([s for s, _ in losses], [v for _, v in losses], color="tab:green", marker=".")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title("training loss (labelled positions)")
    if stop_rates:
        ax2.plot([s for s, _ in stop_rates], [100 * v for _, v in stop_rates], color="tab:blue", marker="o")
        ax2.set_ylim(-5, 105)
        ax2.set_title(f"held-out prompts ending with {end_of_turn}")
    else:
        ax2.text(0.5, 0.5, "no stop-rate callback in this run\n(set stop_eval_steps)", ha="center", va="center")
        ax2.set_axis_off()
    ax2.set_xlabel("step")
    ax2.set_ylabel("stop rate (%)")
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


__all__ = [
    "close",
    "doctor_page",
    "examples_html",
    "figure_png",
    "figure_svg",
    "findings_table",
    "generations_table",
    "json_block",
    "legend",
    "page",
    "section",
    "steps_list",
    "table",
]


def train_report_html(
    summary: dict[str, Any],
    doctor: Any,
    before: Sequence[Any],
    after: Sequence[Any],
    stop_history: Sequence[tuple[int, float]],
    end_of_turn: str,
) -> str:
    """report.html of `eosguard train`: loss and stop rate over training, samples before/after, findings, config."""
    train = summary["train"]
    ev = summary.get("eval")
    rows = [
        ("model", summary["config"]["model"]),
        ("data", summary["data"]),
        ("examples", summary["examples"]),
        ("steps", f"{train['steps']} in {train['seconds']:.1f} s"),
        ("final training loss", "-" if train["final_loss"] is None else f"{train['final_loss']:.4f}"),
        (
            "held-out stop rate",
            f"{ev['stop_rate']:.0%} of {ev['n']} prompts (runaway {ev['runaway_rate']:.0%}, role leaks "
            f"{ev['role_leak_rate']:.0%})"
            if ev
            else "not measured: no held-out data",
        ),
        ("forced past doctor errors", "yes" if summary["forced"] else "no"),
    ]
    fig = training_figure(train["losses"], stop_history, end_of_turn)
    figure = figure_svg(fig, "training loss by step; held-out stop rate by step (stop_eval_steps)")
    close(fig)
    outputs = {}
    if before:
        outputs["before training"] = [(g.output, g.stopped) for g in before]
    if after:
        outputs["after training"] = [(g.output, g.stopped) for g in after]
    return run_report_page(
        "eosguard train report",
        f"{summary['config']['model']} -> {summary['config']['output_dir']}",
        summary=table([], rows),
        figures=[figure],
        findings={"doctor on this configuration": (doctor.to_dict()["findings"], doctor.verdict())},
        tokenizer_lines=summary["tokenizer_setup"],
        prompts=[g.prompt for g in (after or before)],
        outputs=outputs,
        end_of_turn=end_of_turn,
        config=summary["config"],
    )
