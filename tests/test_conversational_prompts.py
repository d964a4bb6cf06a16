"""Conversations as policy prompts: rendering (chat template or plain), truncation, and the RM reading the
prefix in the last user turn (docs/user_guide.md, "Prompt data, SFT data and predict files")."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.messages import as_dicts, render_plain
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.generation import encode_prompts
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.rollout import score_responses

# roles as tokens the word tokenizer knows: 0 system, 1 user, 2 assistant
TEMPLATE = (
    "{% for m in messages %}[SEP] {{ {'system': '0', 'user': '1', 'assistant': '2'}[m['role']] }} "
    "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[SEP] 2 {% endif %}"
)
# a system prompt and two user turns, the prefix at the start of the last one
CONVERSATION = (
    ("system", "give few details ."),
    ("user", "tell me about rivers ."),
    ("assistant", "rivers have a delta ."),
    ("user", "<formality 2> explain bees ."),
)
BARE = (*CONVERSATION[:-1], ("user", "explain bees ."))
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def chat() -> PreTrainedTokenizerFast:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def _ids(
    tokenizer: PreTrainedTokenizerFast, prompt, max_length: int = 64, chat_template: bool = True
) -> list:
    batch = encode_prompts(
        tokenizer, [prompt], max_length, chat_template=chat_template, dimensions=DIMENSIONS
    )
    return batch.input_ids[0].tolist()


def test_chat_template_renders_every_message_and_the_prefix_starts_the_last_user_turn(chat) -> None:
    ids = _ids(chat, CONVERSATION)
    text = chat.apply_chat_template(as_dicts(CONVERSATION), tokenize=False, add_generation_prompt=True)
    assert ids == chat(text, add_special_tokens=False)["input_ids"]
    assert chat.decode(ids) == (
        "[SEP] 0 give few details . [SEP] 1 tell me about rivers . [SEP] 2 rivers have a delta . "
        "[SEP] 1 < formality 2 > explain bees . [SEP] 2"
    )
    # in the ids: the last user turn's marker, then the prefix's tokens, then its text
    user_turn = [chat.sep_token_id, chat.convert_tokens_to_ids("1")]
    starts = [i for i in range(len(ids)) if ids[i : i + 2] == user_turn]
    prefix = chat("<formality 2>", add_special_tokens=False)["input_ids"]
    assert ids[starts[-1] + 2 : starts[-1] + 2 + len(prefix)] == prefix
    assert prefix[0] not in ids[: starts[-1]]  # nowhere earlier


def test_over_long_conversations_lose_earlier_turns_then_the_start_of_the_last(chat) -> None:
    assert len(_ids(chat, CONVERSATION)) == 31
    # the first user turn and its answer go (the system prompt stays) ...
    kept = "[SEP] 0 give few details . [SEP] 1 < formality 2 > explain bees . [SEP] 2"
    assert chat.decode(_ids(chat, CONVERSATION, 17)) == kept
    # ... then the start of the last user turn, as for a text prompt: the prefix and the end survive
    cut = "[SEP] 0 give few details . [SEP] 1 < formality 2 > bees . [SEP] 2"
    assert chat.decode(_ids(chat, CONVERSATION, 16)) == cut


def test_plain_rendering_without_a_template() -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    expected = tokenizer(render_plain(CONVERSATION) + "\n\nAssistant:")["input_ids"]
    assert _ids(tokenizer, CONVERSATION, chat_template=False) == expected
    # a single user turn reads exactly as the standard format's text prompt
    single = (("user", "<formality 2> explain bees ."),)
    assert _ids(tokenizer, single, chat_template=False) == _ids(tokenizer, single[0][1], chat_template=False)


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain", "chat-template"])
def test_rm_reads_the_prefix_in_the_last_user_turn_and_encodes_as_in_training(
    chat, chat_template: bool
) -> None:
    torch.manual_seed(0)
    backbone = load_backbone("moslim/tiny-llama", tokenizer=chat, tiny_config=TINY)
    encoding = PairEncoding(max_length=64, chat_template=chat_template)
    rm = MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=chat, encoding=encoding).eval()
    response = "moreover , bees make honey ."
    out = score_responses(rm, [CONVERSATION], [response])
    formality = [d.name for d in DIMENSIONS].index("formality")
    assert out.requested[0, formality] == 2 and out.mask[0].tolist() == [k == formality for k in range(3)]
    # the encoding of the conversation without its prefix: PairEncoding, as for conversational training rows
    ids = encoding.encode(chat, BARE, response)
    with torch.no_grad():
        probs = rm.probabilities(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    torch.testing.assert_close(out.probs, probs)
    # the same as scoring the bare conversation with the prefix's targets given
    torch.testing.assert_close(rm.score([BARE], [response], targets=[{"formality": 2}]).reward, out.reward)
