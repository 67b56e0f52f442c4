"""librosa's constant-Q filter basis kept in memory (the arrangement score's chroma).

``keep_cqt_filters_in_memory()`` is idempotent; ``evaluation/arrangement.py`` calls it on import.
"""

from __future__ import annotations

import numpy as np


def keep_cqt_filters_in_memory() -> None:
    """librosa builds the constant-Q filter basis anew on every ``chroma_cqt`` call (its own
    cache is an opt-in disk cache): ~70% of a 4 s clip's chroma time. The basis depends only
    on the analysis settings, so keep the few this module uses in memory. librosa scales
    the basis it gets in place, so each call gets a copy.

    The function wrapped is librosa's private ``__vqt_filter_fft`` (librosa is pinned to
    0.11 in pyproject.toml); where it is missing the chroma is only slower.
    """
    import librosa.core.constantq as constantq

    name = "__vqt_filter_fft"
    original = constantq.__dict__.get(name)
    if original is None or getattr(original, "keeps_filters", False):
        return
    memo: dict = {}

    def key_of(value):
        return ("array", value.dtype.str, value.shape, value.tobytes()) if isinstance(value, np.ndarray) else repr(value)

    def filters(*args, **kwargs):
        key = (tuple(key_of(value) for value in args), tuple((name, key_of(value)) for name, value in sorted(kwargs.items())))
        if key not in memo:
            memo[key] = original(*args, **kwargs)
        basis, n_fft, lengths = memo[key]
        return basis.copy(), n_fft, lengths.copy()

    filters.keeps_filters = True
    setattr(constantq, name, filters)
