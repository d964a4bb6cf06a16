"""SFT: response-only labels, the loss by hand, learning on the synthetic world, exports that reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from moslim_pl.callbacks import ExportCallback
from moslim_pl.data.sft import SFTBatch, SFTDataModule, SFTEncoding, collate_sft_batch
from moslim_pl.data.sources import DataError, DataSource, SyntheticConfig
from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.generation import encode_prompts
from moslim_pl.losses.sft import response_nll
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.modules.sft import SFTModule

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _jsonl(tmp_path: Path, rows: list[dict]) -> DataSource:
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return DataSource(str(path))


def _trainer(**kwargs) -> Trainer:
    kwargs = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kwargs,
    }
    return Trainer(**kwargs)


def test_labels_cover_the_response_and_eos_only(tmp_path: Path) -> None:
    rows = [
        {"prompt": "tell me about rivers .", "response": "delta ."},
        {"prompt": "explain bees .", "response": "honey , hive and pollen matter here ."},
    ]
    dm = SFTDataModule(
        tokenizer="moslim/tiny-llama", source=_jsonl(tmp_path, rows), val_source=_jsonl(tmp_path, rows)
    )
    dm.setup("fit")
    tok = dm.tokenizer
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, SFTBatch) and batch.input_ids.shape == (2, 3 + 8 + 1)
    for row, example in enumerate(rows):
        prompt = tok(example["prompt"])["input_ids"]
        response = [*tok(example["response"], add_special_tokens=False)["input_ids"], tok.eos_token_id]
        n = len(prompt) + len(response)
        assert batch.input_ids[row, :n].tolist() == prompt + response
        assert batch.labels[row, :n].tolist() == [IGNORE_LABEL] * len(prompt) + response
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert (batch.labels[row, n:] == IGNORE_LABEL).all()
        assert (batch.input_ids[row, n:] == tok.pad_token_id).all()


def test_prompts_are_encoded_and_cut_as_the_policy_reads_them() -> None:
    tok = load_tokenizer("moslim/tiny-llama")
    prompt = "<verbosity 2> tell me about rivers and volcanoes and oceans ."
    (example,) = SFTEncoding(max_length=9, max_prompt_length=6).encode(tok, [prompt], ["delta , lava ."])
    policy_ids = encode_prompts(tok, [prompt], 6).input_ids[0].tolist()
    assert example.input_ids[:6] == policy_ids  # the prefix and the end of the text survive the cut
    assert example.labels == [IGNORE_LABEL] * 6 + tok("delta , lava", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="max_prompt_length < max_length"):
        SFTEncoding(max_length=8, max_prompt_length=8)


def test_chat_template_trains_the_assistant_turn() -> None:
    tok = load_tokenizer("moslim/tiny-llama")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}[SEP] {{ m['content'] }}"
        "{% else %} [SEP] {{ m['content'] }} [EOS]\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} [SEP]{% endif %}"
    )
    (example,) = SFTEncoding(chat_template=True).encode(tok, ["explain bees ."], ["hive ."])
    prompt = encode_prompts(tok, ["explain bees ."], 64, chat_template=True).input_ids[0].tolist()
    sep, eos = tok.sep_token_id, tok.eos_token_id
    assert prompt[0] == sep and prompt[-1] == sep
    response = [*tok("hive .", add_special_tokens=False)["input_ids"], eos]  # one EOS, no newline
    assert example.input_ids == prompt + response
    assert example.labels == [IGNORE_LABEL] * len(prompt) + response


def test_loss_by_hand() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_LABEL, IGNORE_LABEL, 3, 1, IGNORE_LABEL], [IGNORE_LABEL, 6, 0, 2, 5]])
    terms = [
        -logits[n, t - 1].log_softmax(-1)[labels[n, t]]
        for n in range(2)
        for t in range(1, 5)
        if labels[n, t] != IGNORE_LABEL
    ]
    nll, count = response_nll(logits, labels)
    assert count.item() == 6
    torch.testing.assert_close(nll, torch.stack(terms).sum())

    class FixedLogits(SFTModule):
        def forward(self, input_ids, attention_mask):
            return logits

    module = FixedLogits()
    batch = SFTBatch(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), labels)
    module.log = lambda *args, **kwargs: None
    torch.testing.assert_close(module.training_step(batch, 0), torch.stack(terms).mean())


def test_collate_pads_right() -> None:
    from moslim_pl.data.sft import SFTExample

    batch = collate_sft_batch([SFTExample([5, 6, 7], [IGNORE_LABEL, 6, 7]), SFTExample([8], [8])], 0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_LABEL, 6, 7], [8, IGNORE_LABEL, IGNORE_LABEL]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_short_fit_lowers_val_loss_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = SFTDataModule(synthetic=SyntheticConfig(num_prompts=40, responses_per_prompt=2), batch_size=16)
    module = SFTModule(tiny_config=TINY, max_length=96, max_prompt_length=16, learning_rate=1e-2)
    (before,) = _trainer().validate(module, datamodule=data)
    export = tmp_path / "export"
    trainer = _trainer(max_steps=12, callbacks=[ExportCallback(str(export))], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    (after,) = _trainer().validate(module, datamodule=data)
    # the datamodule read with the module's tokenizer and encoding
    assert data.tokenizer_name == "moslim/tiny-llama" and data.encoding == module.encoding
    assert before["val/loss"] > 5.0 and after["val/loss"] < before["val/loss"] - 1.5
    assert after["val/ppl"] == pytest.approx(torch.tensor(after["val/loss"]).exp().item(), rel=1e-4)
    assert (export / "config.json").is_file() and (export / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind


def test_export_reloads_with_identical_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = SFTModule(tiny_config=TINY)
    module.configure_model()
    folder = tmp_path / "policy"
    module.export(folder)
    with torch.no_grad():
        module.lm.lm_head.weight.mul_(2)  # a second export replaces the first
    module.export(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer("tell me about rivers . delta and rapids .")["input_ids"]])
    module.eval()
    with torch.no_grad():
        expected = module(ids, torch.ones_like(ids))
        for model in (load_causal_lm(str(folder)), AutoModelForCausalLM.from_pretrained(folder)):
            logits = model(input_ids=ids).logits
            assert (logits - expected).abs().max().item() < 1e-6
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"prompt": "a", "answer": "b"}],
            r"sft.jsonl: missing column 'response'; columns are answer, prompt",
        ),
        (
            [{"prompt": "a", "response": "b"}, {"prompt": "", "response": "c"}],
            r"row 1, column 'prompt': empty",
        ),
    ],
)
def test_bad_rows_are_one_line_data_errors(tmp_path: Path, rows, message) -> None:
    dm = SFTDataModule(tokenizer="moslim/tiny-llama", source=_jsonl(tmp_path, rows))
    with pytest.raises(DataError, match=message) as info:
        dm.setup("fit")
    assert "\n" not in str(info.value)
