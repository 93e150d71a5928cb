"""The demo's report: report.json, report.md, report.png and report.html, the same fields for both demos.

The runs table (stop rate in transformers and, where the demo measured it, in llama.cpp; runaway, role leaks, exact
match per task, lengths, training seconds, the doctor's findings), the same prompts answered side by side, the loss
curves and stop-rate bars.

Run as:
    eosguard demo --model smollm2 --out eosguard-demo   # writes report.json, .md, .png, .html
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from eosguard.serve.gguf_files import SERVE_INSTALL


def write_report(
    out: Path,
    model_name: str,
    end_of_turn: str,
    runs: dict[str, dict[str, Any]],
    curves: dict[str, list[tuple[int, float]]],
    prompts: list[str],
    samples: dict[str, list[tuple[str, bool]]],
    settings: Any,
    t0: float,
    tokenizer_lines: list[str],
    *,
    labels: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    sections: list[str] | None = None,
) -> dict[str, Any]:
    """report.json, report.md, report.png and report.html, the same fields for every demo; returns the report.
    labels: what each run is, for the figure's legend; extra: more figures for report.json; sections: more
    markdown for report.md."""
    from eosguard.base.files import write_text

    report = {
        "model": model_name,
        "end_of_turn": end_of_turn,
        "n_eval": next(iter(runs.values()))["n"],
        "runs": runs,
        "examples": {
            "prompts": prompts,
            "outputs": {name: [text for text, _ in outs] for name, outs in samples.items()},
            "stopped": {name: [stopped for _, stopped in outs] for name, outs in samples.items()},
        },
        "tokenizer_setup": tokenizer_lines,
        "settings": _plain(settings),
        "environment": environment(),
        "total_seconds": round(time.perf_counter() - t0, 1),
        **({"labels": labels} if labels else {}),
        **(extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report) + "".join(f"{line}\n" for line in ["", *(sections or [])]))
    fig = figure(curves, runs, end_of_turn, labels)
    fig.savefig(out / "report.png", dpi=100)
    write_text(out / "report.html", report_html(report, fig))
    from eosguard.recipes.pages import close

    close(fig)
    return report


def report_html(report: dict[str, Any], fig: Any) -> str:
    """report.html: the runs table, the figure, the same prompts side by side, each run's findings, settings."""
    from eosguard.checks.findings import FINDINGS
    from eosguard.recipes import pages

    splits = list(next(iter(report["runs"].values()))["by_task"])
    served = _served_column(report)
    rows = [
        (
            name,
            f"{r['stop_rate']:.0%}",
            *([served_rate(r)] if served else []),
            f"{r['runaway_rate']:.0%}",
            f"{r['role_leak_rate']:.0%}",
            f"{r['exact_match']:.0%} (" + " / ".join(f"{r['by_task'][k]['exact_match']:.0%}" for k in splits) + ")",
            f"{r['mean_new_tokens']:.1f}",
            r["steps"],
            f"{r['seconds']:.0f}",
        )
        for name, r in report["runs"].items()
    ]
    headers = [
        "run",
        "stop rate",
        *(["stop rate in llama.cpp"] if served else []),
        "runaway",
        "role leak",
        f"exact match ({' / '.join(splits)})",
        "mean new tokens",
    ]
    findings = {
        name: (
            [
                {"id": i, "severity": FINDINGS[i].severity, "message": FINDINGS[i].what, "fix": FINDINGS[i].fix}
                for i in r["findings"]
            ],
            "no findings",
        )
        for name, r in report["runs"].items()
    }
    ex = report["examples"]
    outputs = {name: list(zip(outs, ex["stopped"][name], strict=True)) for name, outs in ex["outputs"].items()}
    return pages.run_report_page(
        "eosguard demo report",
        f"{report['model']}: {report['n_eval']} held-out prompts, greedy, "
        f"{report['settings']['max_new_tokens']} new tokens at most; {report['total_seconds']:.0f} s in all",
        summary=pages.table([*headers, "steps", "train s"], rows),
        figures=[pages.figure_svg(fig, "training loss by step; held-out stop rate of each run")],
        findings=findings,
        tokenizer_lines=report["tokenizer_setup"],
        prompts=ex["prompts"],
        outputs=outputs,
        end_of_turn=report["end_of_turn"],
        config={"settings": report["settings"], "environment": report["environment"]},
    )


def environment() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
    }


def served_rate(run: dict[str, Any]) -> str:
    """A run's stop rate in llama.cpp, for the tables (skipped, and why, without the serving extras)."""
    served = run.get("served")
    return f"skipped (needs {SERVE_INSTALL})" if served is None else f"{served['stop_rate']:.0%}"


def _served_column(report: dict[str, Any]) -> bool:
    """Whether this demo measured in llama.cpp (the real-model demo does; the tiny one has no such column)."""
    return any("served" in r for r in report["runs"].values())


def report_markdown(report: dict[str, Any]) -> str:
    splits = list(next(iter(report["runs"].values()))["by_task"])
    served = _served_column(report)
    lines = [
        "# eosguard demo report",
        "",
        f"Model: {report['model']}. {report['n_eval']} held-out prompts ({', '.join(splits)}), greedy decoding, "
        f"{report['settings']['max_new_tokens']} new tokens at most; stop = {report['end_of_turn']}.",
        "",
        f"| run | stop rate |{' stop rate in llama.cpp |' * served} runaway | role leak | exact match "
        f"({' / '.join(splits)}) | mean new tokens | steps | train s | doctor findings |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * served,
    ]
    for name, r in report["runs"].items():
        parts = " / ".join(f"{r['by_task'][k]['exact_match']:.0%}" for k in splits)
        em = f"{r['exact_match']:.0%} ({parts})"
        in_cpp = f" {served_rate(r)} |" if served else ""
        lines.append(
            f"| {report.get('labels', {}).get(name, name)} | {r['stop_rate']:.0%} |{in_cpp} {r['runaway_rate']:.0%} | "
            f"{r['role_leak_rate']:.0%} | {em} | {r['mean_new_tokens']:.1f} | {r['steps']} | {r['seconds']:.0f} | "
            f"{', '.join(r['findings']) or '-'} |"
        )
    lines += ["", "## Same prompts, side by side", ""]
    ex = report["examples"]
    for i, prompt in enumerate(ex["prompts"]):
        lines.append(f"**{prompt}**")
        lines.append("")
        for name, outs in ex["outputs"].items():
            lines.append(f"- {report.get('labels', {}).get(name, name)}: `{outs[i]!r}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def _plain(settings: Any) -> dict[str, Any]:
    """A settings dataclass as JSON-ready values (nested settings as dicts)."""
    import dataclasses

    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings.__dict__)


def figure(
    curves: dict[str, list[tuple[int, float]]],
    runs: dict[str, dict[str, Any]],
    end_of_turn: str,
    names: dict[str, str] | None = None,
) -> Any:
    """Loss curves (stage 1 drawn after stage 0) and stop-rate bars with their values; `names`: each run's label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"base": "tab:gray", "broken": "tab:red", "broken-keep-end": "tab:orange", "eosguard": "tab:green"}
    labels = names or {
        "base": "stage 0 (eosguard)",
        "broken": "broken (loss over every token, prompts too)",
        "eosguard": f"eosguard (loss over replies + {end_of_turn})",
    }
    offset = runs["base"]["steps"]
    for name, pts in curves.items():
        if pts:
            shift = 0 if name == "base" else offset
            ax1.plot(
                [p[0] + shift for p in pts], [p[1] for p in pts], label=labels.get(name, name), color=colors.get(name)
            )
    ax1.axvline(offset, color="black", lw=0.5, ls=":")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title("training loss")
    if any(curves.values()):  # a quick run may log no loss at all
        ax1.legend(fontsize=8)
    names = list(runs)
    values = [runs[n]["stop_rate"] * 100 for n in names]
    bars = ax2.bar(names, values, color=[colors.get(n) for n in names])
    for bar, value in zip(bars, values, strict=True):
        ax2.annotate(f"{value:.0f}%", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("stop rate (%)")
    ax2.set_title(f"held-out generations that end with {end_of_turn} (n={runs['base']['n']})")
    fig.tight_layout()
    return fig
