"""Run by tests/distributed/test_sharding.py under ``torchrun --nproc-per-node 2`` (gloo, CPU).

Each check compares a model sharded with FSDP2 over both ranks against an unsharded copy of the same
weights; every rank writes what it saw to ``OUT/rank<r>.json`` for the test to assert on.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from moslim_pl.generation import encode_prompts, generate
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.models.io import save_pretrained_atomic
from moslim_pl.models.lora import LoRAConfig, apply_lora, merged_copy
from moslim_pl.models.sharding import full_state_dict, is_sharded, shard_model

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
PROMPTS = ["explain how bees make honey", "describe the rain", "tell me about trains"]


def _model(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    return load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)


def _equal_states(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def check_generation(rank: int, mesh, tokenizer) -> dict:
    reference = _model(tokenizer)
    sharded = shard_model(_model(tokenizer), mesh)
    batch = encode_prompts(tokenizer, PROMPTS, 16)
    greedy = generate(sharded, tokenizer, batch, max_new_tokens=6, temperature=0.0)
    expected = generate(reference, tokenizer, batch, max_new_tokens=6, temperature=0.0)
    # Rank 0 ends every row at its first token (every id is an EOS), rank 1 never (no such id): without
    # lockstep rank 0 would leave the loop while rank 1 still all-gathers weights.
    eos = list(range(len(tokenizer))) if rank == 0 else [len(tokenizer) + 7]
    early = generate(
        sharded, tokenizer, batch, max_new_tokens=6, temperature=1.0, num_samples=2, eos_token_id=eos
    )
    return {
        "is_sharded": is_sharded(sharded),
        "greedy_matches_unsharded": torch.equal(greedy.sequences, expected.sequences),
        "early_width": early.response_mask.shape[1],
        "early_lengths": early.response_mask.sum(-1).tolist(),
    }


def check_export(rank: int, mesh, tokenizer, out: Path) -> dict:
    reference = _model(tokenizer, seed=1)
    sharded = shard_model(_model(tokenizer, seed=1), mesh)
    state = full_state_dict(sharded)
    folder = save_pretrained_atomic(out / "export", sharded, tokenizer)
    dist.barrier()
    result = {"gathered_keys": len(state)}
    if rank == 0:
        result["gathered_matches"] = _equal_states(state, reference.state_dict())
        reloaded = load_causal_lm(str(folder))
        result["reloaded_matches"] = _equal_states(reloaded.state_dict(), reference.state_dict())
    return result


def check_lora(rank: int, mesh, tokenizer) -> dict:
    config = LoRAConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj"])
    models = []
    for _ in range(2):
        model = apply_lora(_model(tokenizer, seed=2), config)
        torch.manual_seed(3)
        with torch.no_grad():  # B = 0 would make the merge a no-op
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_()
        models.append(model)
    expected = merged_copy(models[0]).state_dict()
    merged = merged_copy(shard_model(models[1], mesh))
    result = {}
    if rank == 0:
        result["merged_matches"] = _equal_states(merged.state_dict(), expected)
    return result


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    tokenizer = load_tokenizer("moslim/tiny-llama")
    results = {
        "generation": check_generation(rank, mesh, tokenizer),
        "export": check_export(rank, mesh, tokenizer, out),
        "lora": check_lora(rank, mesh, tokenizer),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
