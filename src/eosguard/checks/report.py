"""The report the doctor's steps fill in: numbered steps (passed, failed, or skipped: never shown as passed),
findings by id (`eosguard.checks.findings`), facts, collated rows to show, and the verdict a clean report may state.

Run as:
    eosguard doctor --tokenizer PATH --json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eosguard.checks.findings import FINDINGS, Severity

if TYPE_CHECKING:
    from eosguard.checks.tokenview import TokenView


@dataclass
class Finding:
    """One finding; `advice`: the fix in the words of the tool the run used (an axolotl or LLaMA-Factory key), where
    the registry's general fix would not be the user's."""

    id: str
    message: str
    count: int | None = None
    advice: str | None = None

    @property
    def severity(self) -> Severity:
        return FINDINGS[self.id].severity

    @property
    def fix(self) -> str:
        return self.advice or FINDINGS[self.id].fix

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "severity": self.severity, "message": self.message, "fix": self.fix}
        if self.count is not None:
            d["count"] = self.count
        return d


@dataclass
class Step:
    """One numbered step; ok None means the check could not run (shown as skipped, never as passed)."""

    title: str
    ok: bool | None
    detail: str

    @property
    def skipped(self) -> bool:
        return self.ok is None


@dataclass
class DoctorReport:
    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    shown: list[list[TokenView]] = field(default_factory=list)  # collated examples, token by token
    passed: str = "no findings: the stop token is trained and used"  # what a clean report with every step run says

    @property
    def skipped(self) -> list[Step]:
        return [s for s in self.steps if s.skipped]

    def verdict(self) -> str:
        """The report's last line: `passed` only when no finding was made and every step ran; a skipped step is
        named as not checked, never summed up as passed."""
        if self.has_errors:
            return f"{sum(f.severity == 'error' for f in self.findings)} error finding(s) (above)"
        unchecked = "; ".join(f"{s.title} ({s.detail.removeprefix('skipped: ')})" for s in self.skipped)
        if unchecked:
            return (
                f"not checked: {unchecked}; no error in the steps that ran, which does not show the stop token trained"
            )
        if self.findings:
            return "no error finding: warnings only (above)"
        return self.passed

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def blocks_training(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" and FINDINGS[f.id].blocks_training]

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def add(self, finding_id: str, message: str, count: int | None = None) -> Finding:
        if finding_id not in FINDINGS:
            raise KeyError(f"unknown finding id {finding_id!r}: declare it in eosguard.checks.findings")
        finding = Finding(finding_id, message, count)
        self.findings.append(finding)
        return finding

    def step(self, title: str, ok: bool | None, detail: str) -> None:
        self.steps.append(Step(title, ok, detail))

    def sort(self) -> DoctorReport:
        """Errors before warnings, each in the order found."""
        self.findings.sort(key=lambda f: f.severity != "error")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.has_errors,
            "findings": [f.to_dict() for f in self.findings],
            "steps": [{"title": s.title, "ok": s.ok, "skipped": s.skipped, "detail": s.detail} for s in self.steps],
            "skipped": sum(s.skipped for s in self.steps),
            "verdict": self.verdict(),
            "facts": self.facts,
        }


__all__ = ["DoctorReport", "Finding", "Step"]
