"""Tokenizer and backbone loading: the word tokenizer, pad fallback, tiny backbones, errors."""

from __future__ import annotations

import logging

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
)

from moslim_pl.models.backbone import (
    TINY_BACKBONES,
    build_word_tokenizer,
    is_encoder,
    load_backbone,
    load_tokenizer,
)

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "fast", "slow", ",", ".", "!", "?"]


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return build_word_tokenizer(WORDS)


def test_word_tokenizer_round_trip(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer("The cat, sat!")["input_ids"]
    assert len(ids) == 5  # words and punctuation split, no special tokens on a single sequence
    assert tokenizer.unk_token_id not in ids
    text = tokenizer.decode(ids)
    assert text == "the cat , sat !"
    assert tokenizer(text)["input_ids"] == ids
    assert tokenizer("zebra")["input_ids"] == [tokenizer.unk_token_id]
    # punctuation runs are split into single characters, like the regex \w+|[^\w\s]
    assert tokenizer("?!")["input_ids"] == [
        tokenizer.convert_tokens_to_ids("?"),
        tokenizer.convert_tokens_to_ids("!"),
    ]


def test_word_tokenizer_special_tokens_and_pair_template(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == 0
    assert (tokenizer.unk_token, tokenizer.sep_token, tokenizer.eos_token) == ("[UNK]", "[SEP]", "[EOS]")
    prompt = tokenizer("the cat")["input_ids"]
    response = tokenizer("sat .")["input_ids"]
    pair = tokenizer("the cat", "sat .")["input_ids"]
    assert pair == prompt + [tokenizer.sep_token_id] + response + [tokenizer.eos_token_id]
    assert tokenizer.decode(pair) == "the cat [SEP] sat . [EOS]"


def test_word_tokenizer_reloads_through_auto_tokenizer(tokenizer: PreTrainedTokenizerFast, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert reloaded("The dog ran", "fast !")["input_ids"] == tokenizer("The dog ran", "fast !")["input_ids"]
    assert reloaded.pad_token_id == 0 and reloaded.eos_token == "[EOS]"


def _bare_tokenizer(folder, **special: str) -> None:
    """Save a tokenizer that has only the given special tokens."""
    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special).save_pretrained(folder)


def test_load_tokenizer_pads_with_eos(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    _bare_tokenizer(tmp_path, eos_token="</s>")
    with caplog.at_level(logging.INFO, logger="moslim_pl.models.backbone"):
        tokenizer = load_tokenizer(str(tmp_path))
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == 1
    assert "no pad token" in caplog.text


def test_load_tokenizer_without_pad_or_eos_fails(tmp_path) -> None:
    _bare_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="neither a pad token nor an eos token") as info:
        load_tokenizer(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_load_tokenizer_tiny_covers_the_synthetic_vocabulary(name: str) -> None:
    from moslim_pl.data.synthetic import vocabulary

    tokenizer = load_tokenizer(name)
    words = vocabulary()
    ids = tokenizer.convert_tokens_to_ids(list(words))
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.pad_token_id == 0


def test_tiny_llama_defaults(tokenizer: PreTrainedTokenizerFast) -> None:
    model = load_backbone("moslim/tiny-llama", tokenizer=tokenizer)
    assert isinstance(model, LlamaModel)  # base model: no LM head
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert (config.num_key_value_heads, config.intermediate_size, config.max_position_embeddings) == (
        2,
        128,
        512,
    )
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    assert not is_encoder(config)


def test_tiny_bert_overrides_and_dtype(tokenizer: PreTrainedTokenizerFast) -> None:
    model = load_backbone(
        "moslim/tiny-bert", tokenizer=tokenizer, tiny_config={"hidden_size": 32}, dtype="bfloat16"
    )
    assert isinstance(model, BertModel) and is_encoder(model.config)
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_tiny_backbone_reloads_through_auto_model(tokenizer: PreTrainedTokenizerFast, tmp_path) -> None:
    torch.manual_seed(0)
    model = load_backbone("moslim/tiny-llama", tokenizer=tokenizer).eval()
    model.save_pretrained(tmp_path)
    reloaded = load_backbone(str(tmp_path)).eval()
    ids = torch.tensor([tokenizer("the cat sat", "on a mat")["input_ids"]])
    with torch.no_grad():
        expected = model(input_ids=ids).last_hidden_state
        assert torch.equal(reloaded(input_ids=ids).last_hidden_state, expected)
    assert isinstance(AutoModel.from_pretrained(str(tmp_path)), LlamaModel)


@pytest.mark.parametrize("name", ["/no/such/folder", "./no-such-folder"])
def test_load_backbone_missing_folder(name: str) -> None:
    with pytest.raises(ValueError, match="cannot load backbone") as info:
        load_backbone(name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_load_backbone_folder_without_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot load backbone") as info:
        load_backbone(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_is_encoder() -> None:
    assert is_encoder(BertConfig())
    assert not is_encoder(LlamaConfig())
