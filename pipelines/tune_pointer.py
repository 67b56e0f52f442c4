"""``jingle tune pointer``: search the pointer training config with Ray Tune and ASHA.

    python -m pipelines.tune_pointer --data SHARDS --space tune_spaces/FILE.yaml [--config BASE] [--samples N]
        [--max-epochs E] [--search random|optuna] [--grace-period G] [--reduction-factor R]
        [--storage DIR] [--name NAME] [--resume] [--seed S]

The pointer task (``pipelines/tasks/pointer.py``) in the one search of every model
(``pipelines/tune.py``): trials run the training loop of ``jingle train pointer``, ranked by
the task's selection metric; ``STORAGE/NAME/`` gets best_config.json, trials.csv and trials.png.
"""

from __future__ import annotations

import sys
from functools import partial

from jingle.pipelines import tune
from jingle.pipelines.run_spec import TuneSpec

spec = partial(TuneSpec, task="pointer")  # keyword arguments -> the TuneSpec of a pointer run
run = tune.run  # TuneSpec -> TuneSummary
ENTRY_POINT = tune.entry_point("pointer", __doc__)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
