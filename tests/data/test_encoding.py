"""encode_prompt_response: pair encoding, chat templates, and truncation that keeps the response."""

from __future__ import annotations

import pytest

from moslim_pl.data.encoding import PairEncoding, encode_prompt_response
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import build_word_tokenizer

WORDS = ["tell", "me", "about", "rivers", "lakes", "delta", "water", "flows", ".", "user", "assistant", ":"]
TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(WORDS)


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_pair_encoding_without_truncation(tokenizer):
    ids = encode_prompt_response(tokenizer, "tell me about rivers .", "water flows .", 64)
    sep, eos = tokenizer.sep_token_id, tokenizer.eos_token_id
    assert ids == [*_ids(tokenizer, "tell me about rivers ."), sep, *_ids(tokenizer, "water flows ."), eos]


def test_long_prompt_is_cut_and_the_response_kept(tokenizer):
    prompt = "tell me about rivers . " * 10
    ids = encode_prompt_response(tokenizer, prompt, "water flows .", 12)
    response = _ids(tokenizer, "water flows .")
    assert len(ids) == 12
    assert ids[-1 - len(response) : -1] == response  # then [EOS]
    assert ids[:3] == _ids(tokenizer, "tell me about")  # the prompt keeps its start


def test_response_longer_than_the_budget_is_cut_too(tokenizer):
    ids = encode_prompt_response(tokenizer, "tell me", "water flows . " * 20, 10)
    assert len(ids) == 10


def test_chat_template(tokenizer):
    tokenizer.chat_template = TEMPLATE
    ids = encode_prompt_response(tokenizer, "tell me about rivers .", "water flows .", 64, chat_template=True)
    assert tokenizer.decode(ids) == "user : tell me about rivers . [SEP] assistant : water flows . [SEP]"


def test_chat_template_truncation_keeps_the_response(tokenizer):
    tokenizer.chat_template = TEMPLATE
    prompt = "tell me about rivers . " * 10
    ids = encode_prompt_response(tokenizer, prompt, "water flows .", 16, chat_template=True)
    assert len(ids) <= 16
    assert tokenizer.decode(ids).endswith("assistant : water flows . [SEP]")
    assert tokenizer.decode(ids).startswith("user : tell me")


def test_prompt_cap_keeps_the_prompts_first_tokens(tokenizer):
    encoding = PairEncoding(max_length=64, max_prompt_length=3)
    ids = encoding.encode(tokenizer, "tell me about rivers .", "water flows .")
    assert tokenizer.decode(ids) == "tell me about [SEP] water flows . [EOS]"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_length": 1}, "max_length"), ({"max_prompt_length": 300}, "max_prompt_length")],
)
def test_bad_encoding_settings(kwargs, field):
    with pytest.raises(MoslimError, match=field):
        PairEncoding(**kwargs)
