"""How a fusion output is judged: the arrangement score (``arrangement``), the note figures
(``notes``, heard through ``transcription``), the shortcuts an output must beat (``shortcuts``)
and ``score_pair``, the one place they meet, used alike by validation, ``jingle evaluate
fusion`` and the benchmarks. Weight-independent: no model's parameters enter a score."""
