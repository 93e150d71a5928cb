"""`eosguard train`'s pieces under FSDP2 on CPU: the launch tests/training/test_fsdp2.py runs with torchrun (gloo).

accelerate 1.15 turns an FSDP config into FSDP only for GPU-like devices (`AcceleratorState` sets
`DistributedType.FSDP` for MULTI_GPU / MULTI_XPU / MULTI_NPU ..., never for MULTI_CPU), so `Trainer` on CPU trains
with DDP whatever the config says. This launch therefore shards with torch's `fully_shard` directly and takes the
steps itself, with everything else from eosguard's own training path: the config, data, tokenizer setup and doctor
(`load_data`), the model with its LoRA (`build_model`), the rows and guarded collator (`rows_and_collator`), the loss
(`route_loss_through_forward`: labelled positions only). After the steps every rank takes part in gathering the full
weights (`get_model_state_dict(full_state_dict=True, cpu_offload=True)`), and rank 0 goes down the path a sharded
Trainer run takes (`eosguard.recipes.train.from_gathered`, then `finish`: merge, evaluate, save).

One process runs the same steps without sharding, on the whole global batch: the reference.

Run as:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp2_train.py CONFIG.yaml OUT [KEY=VALUE ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from eosguard.chat.render import IGNORE_INDEX
from eosguard.recipes.config import load_config
from eosguard.recipes.train import build_model, doctor_gate, finish, from_gathered, load_data, rows_and_collator
from eosguard.training.loss import route_loss_through_forward
from eosguard.training.trainer import FitResult


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers, under peft's wrappers or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(inner.model.layers)


def main() -> None:
    config, out, *sets = sys.argv[1:]
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    cfg = load_config(config, [*sets, f"output_dir={out}"])
    log = print if rank == 0 else (lambda _line: None)
    data = load_data(cfg, log)
    doctor = doctor_gate(cfg, data, force=False, log=log)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data, log)
    rows, collator = rows_and_collator(cfg, data, log)
    route_loss_through_forward(model)
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in _layers(model):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    losses = []
    per_rank = cfg.batch_size // world
    for step in range(cfg.max_steps):
        batch_rows = [rows[(step * cfg.batch_size + i) % len(rows)] for i in range(cfg.batch_size)]
        batch = collator(batch_rows[rank * per_rank : (rank + 1) * per_rank])
        # every rank divides by the whole global batch's label count, and FSDP averages the gradients over the
        # ranks: times world, the sum is the one-process loss of the global batch
        global_items = int((collator(batch_rows)["labels"][:, 1:] != IGNORE_INDEX).sum())
        labels = batch.pop("labels")
        loss = model(**batch, eosguard_labels=labels, eosguard_num_items=global_items) * world
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        reported = loss.detach() / world
        if world > 1:
            dist.all_reduce(reported)
        losses.append((step + 1, float(reported)))
    full = None
    if world > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    result = FitResult(steps=cfg.max_steps, seconds=0.0, losses=losses, final_loss=losses[-1][1], full_state_dict=full)
    if rank == 0:
        final = from_gathered(cfg, data, full) if full is not None else model
        sharded = sum(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())
        finish(cfg, data, final, doctor, result, log)
        Path(out, "fsdp2.json").write_text(json.dumps({"world": world, "dtensor_parameters": sharded}))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
