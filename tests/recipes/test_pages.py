"""The HTML pages in a real browser (headless Chromium): what a person sees, not what the HTML string contains."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from eosguard.cli.app import app
from tests.browser import screenshot

runner = CliRunner()
README_SCREENSHOT = Path(__file__).parents[2] / "docs" / "label-viewer.png"


def style_of(page, selector: str) -> tuple[str, str]:
    """(background, outline style) of the first element matching selector."""
    return page.eval_on_selector(
        selector, "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).outlineStyle]"
    )


def styles_of_all(page, selector: str) -> list[tuple[str, str]]:
    return page.eval_on_selector_all(
        selector, "es => es.map(e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).outlineStyle])"
    )


def test_label_viewer_shows_the_seed_bug_and_the_fix_side_by_side(tokenizer_dirs, tmp_path, open_page):
    page_file = tmp_path / "labels.html"
    args = ["doctor", "--tokenizer", str(tokenizer_dirs["eos"]), "--collator", "transformers"]
    result = runner.invoke(app, [*args, "--compare", "eosguard", "--html", str(page_file)])
    assert result.exit_code == 1, result.output  # the transformers pipeline has eos-masked: the exit code says so
    visit = open_page(page_file)
    page = visit.page

    legend = page.locator(".legend")
    assert legend.is_visible()
    for words in ("trained", "masked", "padding", "end-of-turn, trained", "end-of-turn, masked"):
        assert words in legend.inner_text()
    trained_style = style_of(page, ".legend .tok.trained:not(.eot)")
    masked_style = style_of(page, ".legend .tok.masked:not(.eot)")
    assert trained_style[0] != masked_style[0]

    # The seed's bug: every assistant-closing <|im_end|> carries the masked style under pad = eos + transformers ...
    broken = styles_of_all(page, '[data-pipeline="transformers"] .example .tok.eot')
    assert broken and all(bg == masked_style[0] for bg, _ in broken)
    assert {outline for _, outline in broken} == {"dashed"}
    # ... and the trained style under eosguard's pipeline, same conversations.
    fixed = styles_of_all(page, '[data-pipeline="eosguard"] .example .tok.eot')
    assert len(fixed) == len(broken) and all(bg == trained_style[0] for bg, _ in fixed)
    assert page.locator('[data-pipeline="transformers"] .sev-error', has_text="error").count() >= 1
    assert "eos-masked" in page.locator('[data-pipeline="transformers"]').inner_text()

    # Hover shows id and label; the token text is readable (no SentencePiece ▁ markers).
    tip = page.locator('[data-pipeline="transformers"] .example .tok.eot').first.get_attribute("title")
    assert "label -100" in tip and "id 32000" in tip
    assert "▁" not in page.locator(".example").first.inner_text()

    assert visit.console_errors == [] and visit.external_requests == []
    shot = screenshot(page, "label-viewer.png")
    assert shot.stat().st_size > 10_000


def test_docs_screenshot_is_one_the_tests_took():
    """docs/doctor.md shows the label viewer; refresh it from tests/artifacts/label-viewer.png when the page changes."""
    assert README_SCREENSHOT.is_file() and README_SCREENSHOT.stat().st_size > 10_000
    page = (README_SCREENSHOT.parent / "doctor.md").read_text()
    assert "](label-viewer.png)" in page


def test_doctor_html_to_an_unwritable_path_is_a_clean_error(tokenizer_dirs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["doctor", "--tokenizer", str(tokenizer_dirs["unk"]), "--html", str(blocker / "x.html")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cannot write" in result.output
    assert "Traceback" not in result.output


def test_train_report_page(train_run, open_page):
    out, code, log = train_run
    assert code == 0, log
    report = out / "model" / "report.html"
    assert "report.html" in log and report.is_file()
    summary = json.loads((out / "model" / "eosguard.json").read_text())
    visit = open_page(report)
    page = visit.page
    for section in ("summary", "figures", "samples", "findings", "tokenizer", "config"):
        assert page.locator(f"section#{section}").is_visible(), section
    # Loss curve and stop rate over training: an inline SVG with one point per callback run (steps 20 and 40).
    assert page.locator("#figures svg").count() == 1
    assert [s for s, _ in summary["stop_rate_history"]] == [20, 40]
    # Samples before/after: the stop token is shown exactly where the model wrote it.
    rows = page.locator("#samples tbody tr")
    assert rows.count() == len(summary["samples"]["after"]) > 0
    after_cells = page.locator("#samples tbody tr td:nth-child(3)")
    stopped = [g["stopped"] for g in summary["samples"]["after"]]
    for i, was_stopped in enumerate(stopped):
        assert (after_cells.nth(i).locator(".stop", has_text="<|im_end|>").count() == 1) == was_stopped
    assert sum(stopped) >= 0.9 * len(stopped)
    assert "pad token: <unk> (id 0)" in page.locator("#tokenizer").inner_text()
    assert '"max_steps": 40' in page.locator("#config").inner_text()
    assert visit.console_errors == [] and visit.external_requests == []
    screenshot(page, "train-report.png")


def test_demo_report_page(quick_demo, open_page):
    out, report = quick_demo
    visit = open_page(out / "report.html")
    page = visit.page
    summary = page.locator("#summary tbody tr")
    assert summary.count() == 3
    for i, (name, run) in enumerate(report["runs"].items()):
        cells = summary.nth(i).locator("td")
        assert cells.nth(0).inner_text() == name and cells.nth(1).inner_text() == f"{run['stop_rate']:.0%}"
    assert page.locator("#figures svg").count() == 1
    # The broken run's samples never show the stop token; eosguard's show it wherever the model wrote it.
    columns = {name: i + 2 for i, name in enumerate(report["examples"]["outputs"])}
    for name, stopped in report["examples"]["stopped"].items():
        cells = page.locator(f"#samples tbody tr td:nth-child({columns[name]})")
        assert [cells.nth(i).locator(".stop").count() == 1 for i in range(len(stopped))] == stopped
    assert not any(report["examples"]["stopped"]["broken"]) and all(report["examples"]["stopped"]["eosguard"])
    broken = page.locator("#findings h3", has_text="broken").locator("xpath=following-sibling::table[1]")
    assert "eos-masked" in broken.inner_text()
    assert visit.console_errors == [] and visit.external_requests == []
    screenshot(page, "demo-report.png")
