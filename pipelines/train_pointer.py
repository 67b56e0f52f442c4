"""``jingle train pointer``: the pointer network on pointer shards, with Ray Train and MLflow.

    python -m pipelines.train_pointer --data SHARDS --config configs/pointer/full.json
        [--workers N] [--gpu] [--storage DIR] [--name NAME] [--resume]

The pointer task (``pipelines/tasks/pointer.py``: augmented, capped, bucketed samples; the
mode, conform or edit, from the config) in the one training run of every model
(``pipelines/train.py``), with the same checkpoints, resume, fault tolerance and MLflow as
``jingle train fusion``.
"""

from __future__ import annotations

import sys
from functools import partial

from jingle.pipelines import train
from jingle.pipelines.run_spec import TrainSpec

spec = partial(TrainSpec, task="pointer")  # keyword arguments -> the TrainSpec of a pointer run
run = train.run  # TrainSpec -> TrainSummary
ENTRY_POINT = train.entry_point("pointer", __doc__)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
