"""The paper's baselines and their comparison with MOSLIM (``docs/paper_comparison.md``).

``comparison`` trains nothing: it loads the policies a recipe trained, answers held-out requests with each
method (interpolating Rewarded Soups with ``soups``) and measures them with ``moslim_pl.evaluation``;
``seeds`` reduces several seeds' results to their mean and spread. This package sits above the
Lightning layer (it builds datamodules), so nothing below imports it (``docs/architecture.md``).
"""
