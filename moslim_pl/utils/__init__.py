"""Helpers with no knowledge of models, data or training: atomic IO, checkpoint IO, hyperparameters,
ranks, memory. Imported by every layer above; imports nothing of ``moslim_pl`` but ``errors``.

Nothing is imported here, so that ``moslim_pl.utils.memory`` stays importable without torch (the benchmark
harness's parent process relies on it).
"""
