"""The one training loop without Ray: a real task (the fusion model, tiny, on the mel codec)
run by ``train_worker`` in a ``LocalContext``: reporting cadence, fault injection, resume
mid-epoch with the same step counter; and the Tune-trial context end to end (Ray)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jingle.datasets.shard_rows import MemoryRows
from jingle.models.codecs import build_codec
from jingle.training.fusion_config import FusionTrainConfig
from jingle.pipelines.loop import InjectedFault, LocalContext, LoopSettings, LoopState, run_epochs
from jingle.pipelines.shard_data import DataPlan
from jingle.pipelines.tasks import TaskPlan, get_task
from jingle.pipelines.worker import WorkerPlan, train_worker

FRAMES = 40
TINY = {
    "model": {"latent_dim": 128, "model_dim": 32, "heads": 4, "layers_per_stage": 1, "feedforward_dim": 64, "dropout": 0.0,
              "compositional": {"component_dim": 8, "model_dim": 32, "heads": 4, "layers": 1, "feedforward_dim": 64,
                                "selector_hidden_dim": 16, "dropout": 0.0}},
    "masking": {"strategy": "temporal", "temporal_segment": 15, "fade_frames": 4},
    "training": {"batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 0},
}


def write_latent_rows(path, *, pairs: int, segments: int, seed: int = 0) -> str:
    """A fusion shard of random log-mel-like latents (what preprocessing writes, less the
    columns training does not read)."""
    rng = np.random.default_rng(seed)
    count = pairs * segments
    latent = lambda: pa.FixedShapeTensorArray.from_numpy_ndarray(rng.normal(-4, 1, (count, 128, FRAMES)).astype(np.float16))
    table = pa.table({
        "pair_id": [f"pair_{index // segments}" for index in range(count)],
        "segment_index": pa.array([index % segments for index in range(count)], pa.int32()),
        "input_latent": latent(),
        "target_latent": latent(),
    })
    pq.write_table(table, path)
    return str(path)


def fusion_plan(tmp_path, *, epochs: int, checkpoint_every_steps: int = 0, fail_at_step: int | None = None) -> WorkerPlan:
    files = (write_latent_rows(tmp_path / "rows.parquet", pairs=4, segments=2),)
    config = FusionTrainConfig.from_dict({**TINY, "training": {**TINY["training"], "epochs": epochs}})
    codec = build_codec("mel")
    return WorkerPlan(
        task="fusion",
        config=config.to_dict(),
        task_plan=TaskPlan(steps_per_epoch=3, codec=codec.describe(), payload={"codec_name": "mel"}, shared={"codec_state": None},
                           recorded={"segment_seconds": 0.5}),
        data=DataPlan(str(tmp_path), files, ("input_latent", "target_latent"), ("pair_0", "pair_1", "pair_2"), ("pair_3",), True),
        loop=LoopSettings(epochs=epochs, steps_per_epoch=3, checkpoint_every_steps=checkpoint_every_steps,
                          fail_at_step=fail_at_step, run_dir=str(tmp_path / "run"), selection=get_task("fusion").selection),
    )


def test_reports_every_epoch_and_every_n_steps_with_checkpoints(tmp_path):
    context = LocalContext(tmp_path / "checkpoints")
    state = train_worker(context, fusion_plan(tmp_path, epochs=2, checkpoint_every_steps=2))
    # mid-epoch reports at steps 2 and 4 (not at 6: an epoch's end reports anyway), epoch reports at 3 and 6
    assert [report["step"] for report in context.reports] == [2, 3, 4, 6]
    epoch_reports = [report for report in context.reports if "total" in report]
    assert [report["epoch"] for report in epoch_reports] == [1, 2]
    for report in epoch_reports:
        assert {"val_total", "val_corr_cost", "val_score", "val_score_plain_mix", "val_newness", "epoch_seconds", "step_seconds",
                "overhead_seconds"} <= set(report)
        assert 0 < report["step_seconds"] <= report["epoch_seconds"]
    assert epoch_reports[0]["setup_seconds"] > 0 and "setup_seconds" not in epoch_reports[1]  # start-up, reported once
    assert len(list((tmp_path / "checkpoints").glob("checkpoint_*/state.pt"))) == 4
    assert (state.step, state.epoch) == (6, 2)
    # checkpoints are ranked by the arrangement score, higher is better, not by the loss
    assert state.best_validation == max(report["val_score"] for report in epoch_reports)
    mid_epoch = [report for report in context.reports if "total" not in report]
    assert [report["val_score"] for report in mid_epoch] == [-math.inf, epoch_reports[0]["val_score"]]


def test_fault_at_a_step_then_resume_mid_epoch_ends_on_the_clean_step_counter(tmp_path):
    plan = fusion_plan(tmp_path, epochs=2, checkpoint_every_steps=2, fail_at_step=5)
    first = LocalContext(tmp_path / "checkpoints")
    with pytest.raises(InjectedFault, match="step 5"):
        train_worker(first, plan)
    assert [report["step"] for report in first.reports] == [2, 3, 4]  # died before step 5
    assert (tmp_path / "run" / ".fault-injected-at-5").exists()

    second = LocalContext(tmp_path / "checkpoints")  # a rerun: resumes from step 4, mid-epoch 2
    state = train_worker(second, plan)
    assert (state.step, state.epoch) == (6, 2)  # takes only the 2 steps epoch 2 had left
    assert [report["step"] for report in second.reports] == [6]  # and the fault is not injected again
    assert second.reports[0]["epoch"] == 2


def test_resume_restores_model_and_optimizer(tmp_path):
    plan = fusion_plan(tmp_path, epochs=1)
    context = LocalContext(tmp_path / "checkpoints")
    train_worker(context, plan)
    longer = fusion_plan(tmp_path, epochs=2)
    from jingle.training.checkpoints import load_state

    saved = load_state(context._checkpoints()[-1], kind="fusion")
    resumed = LocalContext(tmp_path / "checkpoints")
    state = train_worker(resumed, longer)
    assert (state.step, state.epoch) == (6, 2)
    final = load_state(resumed._checkpoints()[-1], kind="fusion")
    assert final.data == {"shards": str(tmp_path), "train_pairs": 3, "validation_pairs": 1, "in_memory": True, "segment_seconds": 0.5}
    assert final.optimizer["state"][0]["step"] == 6  # AdamW's own counter went on from 3, not from 0
    changed = [name for name in saved.model if not torch.equal(saved.model[name], final.model[name])]
    assert changed  # it went on training from the restored weights


def test_run_epochs_refuses_a_worker_that_runs_out_of_batches(tmp_path):
    settings = LoopSettings(epochs=1, steps_per_epoch=5, run_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="worker 0 ran out of training batches at step 2 of 5"):
        run_epochs(context=LocalContext(tmp_path), settings=settings, state=LoopState(), epoch_batches=lambda epoch: [1, 2],
                   train_step=lambda batch: {"total": 1.0}, validate=dict, checkpoint=lambda epoch: None)


def test_should_stop_ends_the_run_between_epochs(tmp_path):
    context = LocalContext(tmp_path, stop_after_reports=2)
    state = LoopState()
    run_epochs(context=context, settings=LoopSettings(epochs=5, steps_per_epoch=1, run_dir=str(tmp_path)), state=state,
               epoch_batches=lambda epoch: [epoch], train_step=lambda batch: {"total": float(batch)}, validate=dict,
               checkpoint=lambda epoch: None)
    assert state.epoch == 2 and [report["total"] for report in context.reports] == [0.0, 1.0]


def test_memory_rows_give_each_worker_an_equal_disjoint_share_per_epoch(tmp_path):
    path = write_latent_rows(tmp_path / "rows.parquet", pairs=5, segments=2)
    pair_ids = [f"pair_{index}" for index in range(5)]
    shares = [MemoryRows.read([path], ["pair_id", "segment_index"], pair_ids, shuffle_seed=3, rank=rank, world_size=2) for rank in range(2)]
    for epoch in range(2):
        seen = [[(p, s) for batch in rows.batches(2, epoch=epoch, drop_last=True) for p, s in zip(batch["pair_id"], batch["segment_index"])] for rows in shares]
        assert len(seen[0]) == len(seen[1]) == 4 and not set(seen[0]) & set(seen[1])
    assert shares[0].order(0).tolist() != shares[0].order(1).tolist()  # a new order every epoch
    held_out = MemoryRows.read([path], ["pair_id"], ["pair_4", "pair_0"])
    assert [p for batch in held_out.batches(3, epoch=0) for p in batch["pair_id"]] == ["pair_0", "pair_0", "pair_4", "pair_4"]


@pytest.mark.ray
def test_tune_trial_context_runs_the_training_in_the_trial(tmp_path, ray_session):
    from ray import tune

    from jingle.pipelines.ray_contexts import tune_trial

    plan = fusion_plan(tmp_path, epochs=2)
    tuner = tune.Tuner(
        tune.with_parameters(lambda config, plan: tune_trial(plan), plan=plan),
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="trial", verbose=0),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["epoch"] == 2 and result.metrics["step"] == 6
    assert "val_total" in result.metrics and result.checkpoint is not None
    from jingle.training.checkpoints import load_state

    assert load_state(result.checkpoint.path, kind="fusion").step == 6
