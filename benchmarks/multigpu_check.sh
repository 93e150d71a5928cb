#!/usr/bin/env bash
# A short, prepared check for a machine with 2+ GPUs, run as-is from the repository root:
#   bash benchmarks/multigpu_check.sh
# The same tiny model, data and 6 steps under DDP, FSDP2 (full shard) and, when deepspeed is installed, ZeRO-3, 2
# processes each through `accelerate launch`: the final folders must hold the same weights (the labelled-positions
# loss and packed rows under every engine) and stop at <|im_end|>. Prints one JSON line. Needs eosguard's
# dependencies with a CUDA build of torch; installs nothing. NOT RUN so far: no multi-GPU machine was lent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work="$(mktemp -d)"
python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
from eosguard.testing.fixtures import openhermes_tokenizer, tiny_mistral
from eosguard.recipes.tasks import make_conversations
root = Path(sys.argv[1])
tok = openhermes_tokenizer()
model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=tok.bos_token_id, eos_id=2, pad_id=None)
model.save_pretrained(root / "model"); tok.save_pretrained(root / "model")
with open(root / "train.jsonl", "w") as f:
    for c in make_conversations(["repeat", "first"], 240, seed=1):
        f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
PY
sets=(--set "model=$work/model" --set "data.train=[$work/train.jsonl]" --set max_steps=6 --set batch_size=2 --set packing=true)
run() {  # name, accelerate config
  cat > "$work/$1.yaml" <<YAML
compute_environment: LOCAL_MACHINE
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: "no"
$2
YAML
  accelerate launch --config_file "$work/$1.yaml" -m eosguard train tests/data/tiny.yaml "${sets[@]}" --set "output_dir=$work/$1"
}
run ddp "distributed_type: MULTI_GPU"
run fsdp "distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_reshard_after_forward: true
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: MistralDecoderLayer
  fsdp_state_dict_type: FULL_STATE_DICT"
engines=(ddp fsdp)
if python3 -c "import deepspeed" 2>/dev/null; then
  run zero3 "distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_save_16bit_model: true
  gradient_accumulation_steps: 1"
  engines+=(zero3)
fi
python3 - "$work" "${engines[@]}" <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file
root, engines = Path(sys.argv[1]), sys.argv[2:]
w = {e: load_file(str(root / e / "model" / "model.safetensors")) for e in engines}
diff = {e: max((w["ddp"][k].float() - w[e][k].float()).abs().max().item() for k in w["ddp"]) for e in engines[1:]}
losses = {e: json.loads((root / e / "model" / "eosguard.json").read_text())["train"]["losses"] for e in engines}
print(json.dumps({"max_weight_diff_vs_ddp": diff, "losses": losses}))
PY
