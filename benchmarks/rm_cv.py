"""Within-prompt ranking of reward models on real data: 5-fold prompt-disjoint cross-validation on HelpSteer.

    OMP_NUM_THREADS=1 python benchmarks/rm_cv.py --json runs/rm_cv.json

Rows: ``../shared/data/helpsteer_sample.jsonl`` (500 HelpSteer responses, 139 prompts, five 0-4 labels).
The distinct prompts are shuffled (``--seed``) and dealt into ``--folds`` folds; each fold's responses are
held out once while the others train, so no prompt is on both sides. Settings, all on the same MiniLM
backbone (``sentence-transformers/all-MiniLM-L6-v2``, mean pooling, the same encoding and budget):

- ``ce``: the multi-head RM, cross-entropy of each head on the labelled responses (the paper's RM);
- ``bt``: the multi-head RM, Bradley-Terry only, on pairs derived within each training prompt
  (``moslim_pl.data.pairs.within_prompt_pairs``: two responses whose labels differ on a dimension, the
  higher one chosen, judged on that dimension's head; ``--pairs-per-prompt`` caps them per prompt and
  dimension, keeping the largest label gaps);
- ``both``: the two sources mixed in one RM (``loss = CE + pair_loss_weight * BT``);
- ``trl``: TRL's ``RewardTrainer`` (a scalar head, ``AutoModelForSequenceClassification``) on every
  training pair derived from the helpfulness labels, fed the same token ids (moslim-pl's ``PairEncoding``).

Metric: ``rank_acc/<head>`` on the held-out fold: over the pairs of held-out responses to one prompt whose
labels differ on that head, the share the head's expected level orders correctly (ties count half);
for ``trl`` the same on the helpfulness pairs with its scalar reward. The multi-head RMs' helpfulness
``rank_acc`` is therefore an accuracy on exactly the held-out pairs TRL is scored on.
Needs ``pip install -e ".[bench]"`` (trl) and the offline MiniLM. Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared harness next to this script
from _harness import trl_training_args  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HELPSTEER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "helpsteer_sample.jsonl"
HEADS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
SETTINGS = ("ce", "bt", "both", "trl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the report here (also printed)")
    parser.add_argument("--data", type=Path, default=HELPSTEER, help="HelpSteer rows (jsonl)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (0-based)")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--max-prompt-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="rows (a pair is one row) per step")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="the backbone's")
    parser.add_argument("--head-learning-rate", type=float, default=1e-3, help="the fresh heads'")
    parser.add_argument("--pair-loss-weight", type=float, default=1.0)
    parser.add_argument("--pairs-per-prompt", type=int, default=1, help="bt/both pairs per prompt and head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="no training: merge these reports (e.g. settings run in parallel processes) into one",
    )
    return parser.parse_args(argv)


def folds_by_prompt(rows: list[dict], folds: int, seed: int) -> list[set[str]]:
    prompts = list(dict.fromkeys(row["prompt"] for row in rows))
    random.Random(seed).shuffle(prompts)
    return [set(prompts[f::folds]) for f in range(folds)]


def capped_pairs(rows: list[dict], per_prompt: int) -> list[dict]:
    """Within-prompt pairs on every head, at most ``per_prompt`` per (prompt, head), largest gaps first."""
    from moslim_pl.data.pairs import largest_gaps, within_prompt_pairs

    return largest_gaps(within_prompt_pairs(rows, HEADS), per_prompt)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_moslim(
    setting: str, train: list[dict], val: list[dict], args: argparse.Namespace, workdir: Path
) -> dict:
    import torch
    from lightning.pytorch import Trainer, seed_everything

    from moslim_pl.callbacks import RewardStatsCallback
    from moslim_pl.data import PreferenceDataModule
    from moslim_pl.modules import RewardModelModule
    from moslim_pl.schema import Dimension

    pointwise = {"path": "json", "data_files": write_jsonl(workdir / "train.jsonl", train)}
    pairs = capped_pairs(train, args.pairs_per_prompt)
    paired = {"path": "json", "data_files": write_jsonl(workdir / "pairs.jsonl", pairs)}
    sources = {"ce": [pointwise], "bt": [paired], "both": [pointwise, paired]}[setting]
    seed_everything(args.seed, verbose=False)
    data = PreferenceDataModule(
        sources=sources,
        val_source={"path": "json", "data_files": write_jsonl(workdir / "val.jsonl", val)},
        dimensions=[Dimension(name, 0, 4) for name in HEADS],
        pair_dimension_column="dimension",
        batch_size=args.batch_size,
        seed=args.seed,
    )
    module = RewardModelModule(
        backbone=MINILM,
        pooling="mean",
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        pair_loss_weight=args.pair_loss_weight,
    )
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[RewardStatsCallback(reestimate_at_end=False)],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    limit = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = limit.validate(module, datamodule=data, verbose=False)
    out = {head: metrics[f"val/rank_acc/{head}"] for head in HEADS}
    out["train_pairs"], out["train_rows"], out["seconds"] = (
        len(pairs) * (setting != "ce"),
        len(train),
        seconds,
    )
    del module, trainer
    torch.set_grad_enabled(True)
    return out


def run_trl(train: list[dict], val: list[dict], args: argparse.Namespace, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    from moslim_pl.data.encoding import PairEncoding
    from moslim_pl.data.pairs import within_prompt_pairs
    from moslim_pl.models.backbone import load_tokenizer, resolve_offline

    folder, _ = resolve_offline(MINILM)
    tokenizer = load_tokenizer(MINILM)
    encoding = PairEncoding(args.max_length, max_prompt_length=args.max_prompt_length)

    def encode(pairs: list[dict]) -> dict[str, list]:
        return {
            "chosen_ids": [encoding.encode(tokenizer, p["prompt"], p["chosen"]) for p in pairs],
            "rejected_ids": [encoding.encode(tokenizer, p["prompt"], p["rejected"]) for p in pairs],
        }

    train_pairs = within_prompt_pairs(train, ["helpfulness"])
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": args.learning_rate}, {"params": head, "lr": args.head_learning_rate}],
        weight_decay=0.0,
    )
    steps = math.ceil(len(train_pairs) / args.batch_size) * args.epochs
    config = RewardConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        use_cpu=True,
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        **trl_training_args(args.learning_rate, steps),
    )
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict(encode(train_pairs)),
        processing_class=tokenizer,
        optimizers=(optimizer, None),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    val_pairs = within_prompt_pairs(val, ["helpfulness"])
    ids = encode(val_pairs)

    @torch.no_grad()
    def rewards(sequences: list[list[int]]) -> torch.Tensor:
        out = []
        for i in range(0, len(sequences), 32):
            batch = tokenizer.pad({"input_ids": sequences[i : i + 32]}, return_tensors="pt")
            out.append(model(**batch).logits[:, 0])
        return torch.cat(out)

    chosen, rejected = rewards(ids["chosen_ids"]), rewards(ids["rejected_ids"])
    correct = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()
    return {
        "helpfulness": float(correct.mean()),
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
        "seconds": seconds,
    }


def summarize(results: dict[str, list[dict]]) -> dict[str, Any]:
    summary = {}
    for setting, folds in results.items():
        heads = [h for h in HEADS if h in folds[0]]
        per_head = {h: [f[h] for f in folds] for h in heads}
        means = [statistics.fmean(f[h] for h in heads) for f in folds]  # mean over heads, per fold
        summary[setting] = {
            "per_head_mean": {h: statistics.fmean(v) for h, v in per_head.items()},
            "per_head_std": {h: statistics.stdev(v) if len(v) > 1 else 0.0 for h, v in per_head.items()},
            "mean_over_heads": statistics.fmean(means),
            "std_over_folds": statistics.stdev(means) if len(means) > 1 else 0.0,
            "folds": len(folds),
        }
    return summary


def merge_reports(paths: list[Path]) -> dict[str, Any]:
    """One report from several runs of this script (same folds and arguments, different settings)."""
    results: dict[str, list[dict]] = {}
    for path in paths:
        for setting, folds in json.loads(path.read_text())["folds"].items():
            if setting in results:
                raise SystemExit(f"rm_cv.py: setting {setting!r} is in more than one of the merged reports")
            results[setting] = folds
    return {"args": {"merged": [str(p) for p in paths]}, "folds": results, "summary": summarize(results)}


def write_report(report: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.stdout.write(text + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        write_report(merge_reports(args.merge), args.json)
        return
    logging.basicConfig(level=logging.WARNING)
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    folds = folds_by_prompt(rows, args.folds, args.seed)
    results: dict[str, list[dict]] = {s: [] for s in args.settings}
    for f, held_out in enumerate(folds):
        if args.only_folds and f not in args.only_folds:
            continue
        train = [r for r in rows if r["prompt"] not in held_out]
        val = [r for r in rows if r["prompt"] in held_out]
        for setting in args.settings:
            with tempfile.TemporaryDirectory() as tmp:
                if setting == "trl":
                    out = run_trl(train, val, args, Path(tmp))
                else:
                    out = run_moslim(setting, train, val, args, Path(tmp))
            out["fold"] = f
            results[setting].append(out)
            sys.stderr.write(f"fold {f} {setting}: {json.dumps(out)}\n")
            sys.stderr.flush()
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "folds": results,
        "summary": summarize(results),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
