"""A transparent tiny backbone for reward models whose weights are set by hand (tests, diagnostics)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moslim_pl.models.backbone import load_backbone, load_tokenizer


def embedding_readout_backbone(hidden_size: int = 16) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-layer ``moslim/tiny-llama`` whose hidden state at every position is ``RMSNorm(e_token)``.

    The layer's output projections (attention ``o_proj``, MLP ``down_proj``) are zero, so nothing mixes
    across positions and the final norm sees the token's embedding alone: an embedding ``e_i`` (the unit
    vector on axis ``i``) comes out as ``sqrt(hidden_size) * e_i``. The embeddings start at zero; the
    caller writes the ones it needs (``backbone.get_input_embeddings().weight``) and the heads that read
    the pooled result. Returns ``(backbone, tokenizer)``.
    """
    tokenizer = load_tokenizer("moslim/tiny-llama")
    config = {
        "hidden_size": hidden_size,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=config)
    with torch.no_grad():
        for layer in backbone.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        backbone.get_input_embeddings().weight.zero_()
    return backbone, tokenizer
