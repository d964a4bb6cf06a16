"""Shared fixtures: paths, the quickstart config, TensorBoard readers and a hand-built reward model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from moslim_pl.data.synthetic import CASUAL_MARKERS, DIMENSIONS, FORMAL_MARKERS
from moslim_pl.evaluation import tensorboard
from moslim_pl.models.handbuilt import embedding_readout_backbone
from moslim_pl.models.reward_model import MultiHeadRewardModel

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
QUICKSTART = ROOT / "configs" / "reward_model" / "quickstart.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests run tiny models, fastest on one thread; on a busy 2-core machine two threads spin ~100x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def helpsteer_sample() -> Path:
    path = SHARED_DATA / "helpsteer_sample.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/helpsteer_sample.jsonl is not on this machine")
    return path


@pytest.fixture
def read_scalars():
    return tensorboard.read_scalars


@pytest.fixture
def read_image_tags():
    return tensorboard.read_image_tags


@pytest.fixture
def quickstart_config() -> Path:
    return QUICKSTART


HIDDEN = 16
WEIGHT = 20.0


@pytest.fixture
def load_script():
    """``load_script(path)``: a script outside the package (recipes/, benchmarks/) imported as a module."""

    def load(path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def formality_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RM export whose formality head counts markers: no training, weights set by hand.

    The layers' output projections are zero, so the backbone's output is the final RMSNorm of the token
    embeddings: ``sqrt(H) * e0`` for a formal marker, ``sqrt(H) * e1`` for a casual one, ``sqrt(H) * e2``
    for any other token. Mean pooling turns that into the share of formal and casual tokens of the pair,
    and the formality head's logit of level 2 (formal) is ``WEIGHT`` times the formal share, that of
    level 0 (casual) ``WEIGHT`` times the casual share. The other heads are uniform.
    """
    backbone, tokenizer = embedding_readout_backbone(HIDDEN)
    rm = MultiHeadRewardModel(backbone, DIMENSIONS, pooling="mean", tokenizer=tokenizer)
    with torch.no_grad():
        embeddings = backbone.get_input_embeddings().weight
        embeddings[:, 2] = 1.0
        for axis, markers in ((0, FORMAL_MARKERS), (1, CASUAL_MARKERS)):
            for ids in tokenizer.convert_tokens_to_ids(list(markers)):
                embeddings[ids] = 0.0
                embeddings[ids, axis] = 1.0
        for head in rm.heads.values():
            head.weight.zero_()
            head.bias.zero_()
        rm.heads["formality"].weight[2, 0] = WEIGHT / HIDDEN**0.5
        rm.heads["formality"].weight[0, 1] = WEIGHT / HIDDEN**0.5
    folder = tmp_path_factory.mktemp("rm") / "export"
    rm.save_pretrained(folder)
    return folder
