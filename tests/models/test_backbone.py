"""Tokenizer and backbone loading: the word tokenizer, pad fallback, tiny backbones, errors, offline mirrors."""

from __future__ import annotations

import logging
from pathlib import Path

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
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from moslim_pl.errors import MoslimError
from moslim_pl.generation import encode_prompts, generate
from moslim_pl.models import backbone
from moslim_pl.models.backbone import (
    MIRRORS_ENV,
    OFFLINE_MIRRORS,
    TINY_BACKBONES,
    OfflineMirror,
    build_word_tokenizer,
    is_encoder,
    load_backbone,
    load_causal_lm,
    load_tokenizer,
    mirror_folder,
    resolve_offline,
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


# ------------------------------------------------------------------ offline mirrors

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _installed_mirror(name: str) -> Path:
    """The folder of ``name``'s offline mirror; skips the test when its package is not installed."""
    folder = mirror_folder(OFFLINE_MIRRORS[name])
    if folder is None:
        pytest.skip(f"the offline copy of {name} ({OFFLINE_MIRRORS[name].package}) is not installed")
    return folder


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    _installed_mirror(SMOLLM2)
    return load_tokenizer(SMOLLM2)


def test_mirror_without_its_package_or_file_keeps_the_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    mirrors = {
        "org/absent": OfflineMirror("moslim_no_such_package", gguf_file="m.gguf"),
        # an installed package that does not hold the model file is no mirror either
        "org/empty": OfflineMirror("json", gguf_file="m.gguf"),
    }
    monkeypatch.setattr(backbone, "OFFLINE_MIRRORS", mirrors)
    assert resolve_offline("org/absent") == ("org/absent", None)
    assert resolve_offline("org/empty") == ("org/empty", None)
    assert resolve_offline("org/unlisted", "x.gguf") == ("org/unlisted", "x.gguf")


def test_smollm2_mirror_resolves_to_its_gguf_file(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _installed_mirror(SMOLLM2)
    gguf_file = OFFLINE_MIRRORS[SMOLLM2].gguf_file
    assert gguf_file is not None and (folder / gguf_file).is_file()
    monkeypatch.setattr(backbone, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="moslim_pl.models.backbone"):
        assert resolve_offline(SMOLLM2) == (str(folder), gguf_file)
        assert resolve_offline(SMOLLM2, gguf_file) == (str(folder), gguf_file)
    # said once, as a warning: the quantized copy is not the hub's exact weights
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "Q4_1" in caplog.text
    # another file of the hub repository, or mirrors turned off: the hub
    assert resolve_offline(SMOLLM2, "other.gguf") == (SMOLLM2, "other.gguf")
    monkeypatch.setenv(MIRRORS_ENV, "0")
    assert resolve_offline(SMOLLM2) == (SMOLLM2, None)


def test_minilm_mirror_resolves_to_its_folder() -> None:
    folder = _installed_mirror("sentence-transformers/all-MiniLM-L6-v2")
    assert (folder / "config.json").is_file()
    assert resolve_offline("sentence-transformers/all-MiniLM-L6-v2") == (str(folder), None)


def test_smollm2_tokenizer_pads_with_im_end_and_renders_the_prefix_in_the_user_turn(
    smollm2_tokenizer: PreTrainedTokenizerBase,
) -> None:
    tokenizer = smollm2_tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # the end of an assistant turn is the eos; padding (always masked) reuses it
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == tokenizer.eos_token_id == im_end
    batch = encode_prompts(tokenizer, ["<helpfulness 3> Explain tides.", "Hi."], 96, chat_template=True)
    first = tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert first.startswith("<|im_start|>system\n")
    assert first.endswith(
        "<|im_start|>user\n<helpfulness 3> Explain tides.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert batch.attention_mask[1, 0] == 0 and batch.input_ids[1, 0] == tokenizer.pad_token_id  # left-padded


@pytest.mark.slow
def test_smollm2_causal_lm_stops_at_im_end_and_saves_dense(
    smollm2_tokenizer: PreTrainedTokenizerBase, tmp_path
) -> None:
    tokenizer = smollm2_tokenizer
    model = load_causal_lm(SMOLLM2, tokenizer=tokenizer).eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == im_end
    # the GGUF blocks were unpacked: plain float weights, nothing marks the model as quantized
    assert (
        not getattr(model, "is_quantized", False)
        and getattr(model.config, "quantization_config", None) is None
    )
    assert next(model.parameters()).dtype == torch.float32
    batch = encode_prompts(tokenizer, ["What is the capital of France? One word."], 96, chat_template=True)
    rollout = generate(model, tokenizer, batch, max_new_tokens=24, temperature=0.0)
    assert bool(rollout.finished.all()) and "Paris" in rollout.responses[0]
    assert "<|im_end|>" not in rollout.responses[0]
    last = int(rollout.response_mask[0].sum()) - 1
    assert rollout.sequences[0, rollout.prompt_length + last] == im_end

    model.save_pretrained(tmp_path)  # a model still marked as GGUF-quantized refuses to save
    reloaded = load_causal_lm(str(tmp_path), tokenizer=tokenizer).eval()
    ids = batch.input_ids[:, -8:]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize("name", ["runs/no_such_run/version_0/export", "./missing", "/no/such/folder"])
def test_a_missing_local_folder_is_named_as_such(name: str) -> None:
    # not the hub's "Repo id must be in the form ..." for what can only be a folder
    with pytest.raises(MoslimError, match=f"cannot load tokenizer '{name}': no such folder"):
        load_tokenizer(name)
