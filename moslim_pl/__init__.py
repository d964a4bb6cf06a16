"""moslim-pl: MOSLIM (multi-objective alignment steered by prompt prefixes) in PyTorch Lightning."""

from moslim_pl.schema import Dimension

__version__ = "0.1.0"
__all__ = ["Dimension", "__version__"]
