"""Rewrite the generated tables of these docs pages from the code (tests/test_package.py and
tests/chat/test_templates.py fail while a table differs from what the code gives):

- docs/doctor.md: the findings (`eosguard.checks.findings.markdown_table`);
- docs/training.md: every config key (`eosguard.recipes.config.reference`);
- docs/templates.md: TRL's templates as eosguard reads them (`eosguard.testing.fixtures.template_table`, ~1 min).

Run as:
    python docs/tables.py
"""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).parent


def replace_table(page: Path, header: str, table: str) -> None:
    """Put `table` where the generated text starting with `header` stands: as many paragraphs as `table` has."""
    text = page.read_text()
    start = end = text.index(header)
    for _ in range(table.count("\n\n") + 1):
        end = text.find("\n\n", end + 1)
        end = len(text) if end < 0 else end
    page.write_text(text[:start] + table + text[end:])


def main() -> None:
    from eosguard.checks.findings import markdown_table
    from eosguard.recipes.config import reference
    from eosguard.testing.fixtures import template_table

    replace_table(DOCS / "doctor.md", "| id | severity | what |", markdown_table())
    replace_table(DOCS / "training.md", "| key | type | default | what |", reference())
    replace_table(DOCS / "templates.md", "| model | TRL template |", template_table())  # the table and its legend
    print("rewrote the tables of doctor.md, training.md and templates.md")


if __name__ == "__main__":
    main()
