"""`eosguard demo`: which demo runs (`demo`): the SFT bug and its fix on the tiny model or on SmolLM2
(`eosguard.recipes.demo`), or preference and RL training after eosguard's SFT (`eosguard.recipes.demo_preference`).

Run as:
    eosguard demo --model smollm2 --out eosguard-demo
    eosguard demo --model smollm2 --stage dpo --out eosguard-dpo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from eosguard.base.errors import EosguardError

DemoModel = Literal["tiny", "smollm2"]
DemoStage = Literal["sft", "dpo"]


def demo(
    out_dir: str | Path, model: DemoModel = "tiny", *, stage: DemoStage = "sft", quick: bool = False, log: Any = print
) -> dict[str, Any]:
    """`eosguard demo`: the real SmolLM2 (`run_real_demo`) or the tiny model (`run_demo`), full or quick; `stage`
    dpo: preference and RL training after eosguard's SFT, on SmolLM2 (`run_preference_demo`)."""
    if stage == "dpo":
        from eosguard.recipes.demo_preference import PreferenceDemoSettings, run_preference_demo

        if model != "smollm2":
            raise EosguardError("--stage dpo runs on the real model", hint="eosguard demo --model smollm2 --stage dpo")
        settings = PreferenceDemoSettings.quick() if quick else PreferenceDemoSettings()
        return run_preference_demo(out_dir, settings, log=log)
    from eosguard.recipes.demo import DemoSettings, RealDemoSettings, run_demo, run_real_demo

    if model == "smollm2":
        return run_real_demo(out_dir, RealDemoSettings.quick() if quick else RealDemoSettings(), log=log)
    return run_demo(out_dir, DemoSettings.quick() if quick else DemoSettings(), log=log)


__all__ = ["DemoModel", "DemoStage", "demo"]
