"""Policy exports: a model card, and with LoRA the adapter in PEFT's own layout (same log-probs as merged)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from peft import PeftModel
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig
from moslim_pl.rollout import sequence_logprobs

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_lora_rloo_export_has_a_peft_adapter_with_the_merged_log_probs(
    formality_rm: Path, formality_prompts, rl_trainer, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    torch.manual_seed(0)
    base_dir = tmp_path / "sft"  # a loadable base, as an SFT export is
    load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    seed_everything(0)
    module = RLOOModule(
        policy=str(base_dir),
        reward_model=str(formality_rm),
        num_samples=2,
        lora={"r": 4, "alpha": 8},
        sampling=SamplingConfig(max_new_tokens=8, max_prompt_length=32),
        optim=OptimConfig(learning_rate=5e-2),
    )
    prompts = formality_prompts(0, 8, seed=0)
    rl_trainer(3, logger=False).fit(module, DataLoader(prompts, batch_size=4))
    export = module.export(tmp_path / "export")

    adapter = export / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in adapter.iterdir()
    }
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_dir
    )
    card = (export / "README.md").read_text()
    assert "`RLOOModule`" in card and "| `formality` | 0..2 |" in card and "optimizer steps: 3" in card
    assert "PeftModel.from_pretrained" in (adapter / "README.md").read_text()

    merged = AutoModelForCausalLM.from_pretrained(export).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ids = torch.tensor(tokenizer(prompts[:4], padding=True)["input_ids"])
    mask = (ids != tokenizer.pad_token_id).long()
    prompt_length = ids.shape[1] // 2
    response_mask = mask[:, prompt_length:]
    with torch.no_grad():
        lp_merged = sequence_logprobs(merged, ids, mask, prompt_length, response_mask)
        lp_peft = sequence_logprobs(peft, ids, mask, prompt_length, response_mask)
        lp_base = sequence_logprobs(base, ids, mask, prompt_length, response_mask)
    diff = float((lp_merged - lp_peft).abs().max())
    print(f"PEFT adapter vs merged export: max abs log-prob diff {diff:.3g}")
    assert diff < 1e-4
    assert float((lp_merged - lp_base).abs().max()) > 1e-3  # the adapters did train


def test_full_policy_export_has_a_card_and_no_adapter(formality_rm: Path, tmp_path: Path) -> None:
    seed_everything(0)
    module = RLOOModule(
        reward_model=str(formality_rm),
        tiny_config=TINY,
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=4),
    )
    export = module.export(tmp_path / "export")
    assert (export / "README.md").is_file() and not (export / "adapter").exists()
    assert "<verbosity 3> <formality 2>" in (export / "README.md").read_text()
