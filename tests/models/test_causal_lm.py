"""load_causal_lm: tiny decoders with an LM head, save/reload, and encoders refused."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaForCausalLM

from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import build_word_tokenizer, load_causal_lm

WORDS = ["the", "cat", "sat", "on", "a", "mat", "."]


def test_tiny_llama_is_a_causal_lm_with_generation_ids() -> None:
    tokenizer = build_word_tokenizer(WORDS)
    model = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config={"hidden_size": 32})
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    ids = torch.tensor([tokenizer("the cat sat")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, 3, len(tokenizer))


def test_save_and_reload(tmp_path) -> None:
    tokenizer = build_word_tokenizer(WORDS)
    model = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    model.save_pretrained(tmp_path)
    reloaded = load_causal_lm(str(tmp_path), dtype=torch.float32)
    assert isinstance(reloaded, LlamaForCausalLM)
    assert next(reloaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight.float())
    assert reloaded.generation_config.eos_token_id == tokenizer.eos_token_id


def test_encoders_are_refused(tmp_path) -> None:
    with pytest.raises(MoslimError, match="not a decoder"):
        load_causal_lm("moslim/tiny-bert")
    BertModel(
        BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(tmp_path)
    with pytest.raises(MoslimError, match="encoder"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(MoslimError, match="no such folder"):
        load_causal_lm(str(tmp_path / "missing"))
