"""``jingle train fusion``: the fusion model on latent shards, with Ray Train and MLflow.

    python -m pipelines.train_fusion --data SHARDS --config configs/fusion.json
        [--workers N] [--gpu] [--storage DIR] [--name NAME] [--resume] [--codec-checkpoint PATH]

The fusion task (``pipelines/tasks/fusion.py``) in the one training run of every model
(``pipelines/train.py``): checkpoints go to ``STORAGE/NAME``, MLflow to
``STORAGE/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is set; rerunning with the same storage
and name (or ``--resume``) continues from the latest checkpoint with the same step counter.
"""

from __future__ import annotations

import sys
from functools import partial

from jingle.pipelines import train
from jingle.pipelines.run_spec import TrainSpec

spec = partial(TrainSpec, task="fusion")  # keyword arguments -> the TrainSpec of a fusion run
run = train.run  # TrainSpec -> TrainSummary
ENTRY_POINT = train.entry_point("fusion", __doc__)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
