"""``jingle train pointer``: the pointer network on pointer shards, with Ray Train and MLflow.

    python -m pipelines.train_pointer --data SHARDS --config configs/pointer/full.json
        [--workers N] [--gpu] [--storage DIR] [--name NAME] [--resume]

The same machinery as ``jingle train fusion`` (``pipelines/train_common.py``): a
TorchTrainer runs ``pointer_train_loop`` on every worker, the rows stream to the workers
through Ray Data split by pair id, checkpoints go to ``STORAGE/NAME`` with resume and
fault tolerance, MLflow to ``STORAGE/mlflow.db``. What is the pointer model's own: rows
become augmented samples of capped length (plan 002, ``datasets/augmentation.py``),
bucketed by length and padded, and the mode (conform or edit) comes from the config.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (ray submit): make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ray
import torch

from datasets.augmentation import Augmentor
from datasets.pointer_batches import bucketed, cap_lengths, samples_from_rows
from datasets.pointer_preprocess import TRAINING_COLUMNS, features_id
from models.checkpoints import TrainingState
from models.pointer import PointerBatch, PointerNetwork, pad_pointer_samples
from models.pointer_training import build_pointer_loss, evaluate_pointer, pointer_train_step
from models.training import build_optimizer, build_scheduler, unwrap
from pipelines.common import EntryPoint, UsageError, add_common_arguments, init_ray, reporting
from pipelines.pointer_config import PointerTrainConfig
from pipelines.train_common import (
    LoopState,
    ShardData,
    Tracker,
    TrainSummary,
    add_train_arguments,
    count_workers,
    open_tracking_run,
    parse_overrides,
    place_run,
    record_worker,
    restore,
    run_epochs,
    run_trainer,
    split_pair_ids,
    summarize,
    tracking_uri,
    worker_torch_threads,
)

PROG = "jingle train pointer"
SHOWN_METRICS = ("total", "val_total", "val_accuracy_within_2", "val_jump_accuracy_within_2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser, "pointer")
    add_common_arguments(parser)


def features_codec(config: PointerTrainConfig) -> dict:
    """What a pointer checkpoint records in place of a codec: the log-mel settings."""
    return {"name": "logmel", "id": features_id(config.features), "frame_rate": config.features.frame_rate, **config.features.to_dict()}


def run(args: argparse.Namespace) -> TrainSummary:
    config = PointerTrainConfig.from_file(args.config).with_overrides(parse_overrides(args.override))
    data = ShardData.open(args.data, kind="pointer")
    if data.settings["features"] != config.features.to_dict():
        raise UsageError(
            f"--data was made with features {data.settings['features']}, the config asks for {config.features.to_dict()}: "
            f"preprocess again with this --config, or use the config the shards were made with"
        )
    init_ray(args.num_cpus)
    use_gpu = bool(args.gpu)
    workers = count_workers(args.workers, use_gpu)
    training = config.training
    train_ids, validation_ids = split_pair_ids(sorted(data.rows_by_pair), training.validation_fraction, training.seed)
    samples_per_worker = (len(train_ids) // workers) * config.data.repeats_per_epoch
    steps_per_epoch = samples_per_worker // training.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"{len(train_ids)} training pairs ({config.data.repeats_per_epoch} repeats per epoch) cannot fill one batch of "
            f"{training.batch_size} on each of {workers} workers: lower training.batch_size or --workers, or raise data.repeats_per_epoch"
        )
    codec = features_codec(config)
    place = place_run(args, kind="pointer", codec_id=codec["id"])
    run_id = open_tracking_run(
        storage=place.storage, experiment="jingle-pointer", run_name=place.name,
        params={"config": config.to_dict(), "data": data.root, "workers": workers},
    )
    loop_config = {
        "config": config.to_dict(),
        "codec": codec,
        "data": {"shards": data.root, "train_pairs": len(train_ids), "validation_pairs": len(validation_ids)},
        "steps_per_epoch": steps_per_epoch,
        "tracking_uri": tracking_uri(place.storage),
        "run_id": run_id,
        "run_dir": str(place.run_dir),
    }
    result = run_trainer(
        pointer_train_loop,
        loop_config=loop_config,
        datasets=data.datasets(train_ids, validation_ids, TRAINING_COLUMNS),
        workers=workers,
        use_gpu=use_gpu,
        storage=place.storage,
        name=place.name,
        num_to_keep=training.num_to_keep,
        max_failures=training.max_failures,
    )
    return summarize(result, kind="pointer", place=place, has_validation=bool(validation_ids), run_id=run_id, shown_metrics=SHOWN_METRICS)


# ---------------------------------------------------------------- the worker loop


def training_batches(
    shard, config: PointerTrainConfig, augmentor: Augmentor, *, epoch: int, rank: int, seed: int
) -> Iterator[PointerBatch]:
    """One epoch of a worker's batches: rows -> augmented, capped samples -> bucketed,
    concatenated (B3) and padded batches. ``repeats_per_epoch`` passes over the shard."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + epoch)
    edit_mode = config.model.mode == "edit"

    def rows():
        # The first pass streams; further passes of the epoch replay the worker's part from
        # memory instead of reading the shards again (a worker holds 1/N of the corpus).
        kept: list = []
        for rows in shard.iter_batches(batch_size=8, batch_format="numpy"):
            if config.data.repeats_per_epoch > 1:
                kept.append(rows)
            yield rows
        for _ in range(config.data.repeats_per_epoch - 1):
            yield from kept

    def samples():
        index = 0
        for batch in rows():
            for sample in samples_from_rows(batch, min_confidence=config.data.min_confidence):
                # rank in the index: workers draw different augmentations
                sample = augmentor(sample, epoch=epoch, index=index * 1009 + rank)
                index += 1
                yield cap_lengths(
                    sample,
                    max_edit_frames=config.data.max_edit_frames,
                    max_raw_frames=config.data.max_raw_frames,
                    keep_start=edit_mode,
                    generator=generator,
                )

    for batch_index, group in enumerate(
        bucketed(samples(), batch_size=config.training.batch_size, bucket_batches=config.data.bucket_batches, generator=generator)
    ):
        items = [sample for sample, _ in group]
        ends = [ended for _, ended in group]
        if not edit_mode:  # B3 joins samples; an edit's start and end must stay its own
            items = augmentor.concatenate(items, epoch=epoch, batch_index=batch_index * 1009 + rank)
            ends = [True] * len(items)
        yield pad_pointer_samples(items, ends=ends)


def validation_batches(shard, config: PointerTrainConfig) -> Iterator[PointerBatch]:
    """Held-out rows without augmentation, capped as in training (edit mode: from the
    start) with a generator seeded the same every pass, so every epoch sees the same."""
    generator = torch.Generator().manual_seed(0)
    group: list = []
    for rows in shard.iter_batches(batch_size=8, batch_format="numpy"):
        for sample in samples_from_rows(rows, min_confidence=config.data.min_confidence):
            group.append(
                cap_lengths(
                    sample,
                    max_edit_frames=config.data.max_edit_frames,
                    max_raw_frames=config.data.max_raw_frames,
                    keep_start=config.model.mode == "edit",
                    generator=generator,
                )
            )
            if len(group) == config.training.batch_size:
                yield pad_pointer_samples([s for s, _ in group], ends=[e for _, e in group])
                group = []
    if group:
        yield pad_pointer_samples([s for s, _ in group], ends=[e for _, e in group])


def pointer_train_loop(loop_config: dict) -> None:
    """Per-worker training: wires data, model, checkpoints and reporting, nothing more."""
    config = PointerTrainConfig.from_dict(loop_config["config"])
    training = config.training
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    record_worker(loop_config["run_dir"], rank)
    if device.type == "cpu":
        torch.set_num_threads(worker_torch_threads(context.get_local_world_size()))
    torch.manual_seed(training.seed)  # identical initial weights on every worker
    model = PointerNetwork(config.model).to(device)
    loss = build_pointer_loss(config.model).to(device)
    optimizer = build_optimizer(model, training)
    steps_per_epoch = loop_config["steps_per_epoch"]
    scheduler = build_scheduler(optimizer, training, total_steps=steps_per_epoch * training.epochs)
    loop = LoopState()
    state = restore("pointer", loop_config["codec"]["id"])
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        loop = LoopState(state.step, state.epoch, state.extra.get("best_validation", float("inf")))
    model = ray.train.torch.prepare_model(model)
    autocast = torch.bfloat16 if training.mixed_precision and device.type == "cuda" else None
    tracker = Tracker(loop_config["tracking_uri"], loop_config["run_id"], enabled=rank == 0)
    augmentor = Augmentor(config.augmentation, seed=training.seed)
    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation") if loop_config["data"]["validation_pairs"] else None

    def checkpoint_state(epoch: int) -> TrainingState | None:
        if rank != 0:
            return None
        return TrainingState(
            kind="pointer",
            model=unwrap(model).state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=loop.step,
            epoch=epoch,
            config=config.to_dict(),
            codec=loop_config["codec"],
            data=loop_config["data"],
            extra={"best_validation": loop.best_validation, "mlflow_run_id": loop_config["run_id"]},
        )

    # The first held-out batch of the last validation pass, for the MLflow picture: every
    # worker must read its split together, so rank 0 cannot go back for one alone.
    example: list[PointerBatch] = []

    def keep_first(batches: Iterator[PointerBatch]) -> Iterator[PointerBatch]:
        example.clear()
        for batch in batches:
            if not example:
                example.append(batch)
            yield batch

    def validate() -> dict[str, float]:
        if validation_shard is None:
            return {}
        means = evaluate_pointer(unwrap(model), keep_first(validation_batches(validation_shard, config)), loss)
        return {f"val_{name}": value for name, value in means.items()}

    run_epochs(
        training=training,
        steps_per_epoch=steps_per_epoch,
        state=loop,
        run_dir=loop_config["run_dir"],
        epoch_batches=lambda epoch: training_batches(train_shard, config, augmentor, epoch=epoch, rank=rank, seed=training.seed),
        train_step=lambda batch: pointer_train_step(
            model, batch.to(device), loss, optimizer, scheduler=scheduler, grad_clip=training.grad_clip, autocast_dtype=autocast
        ),
        validate=validate,
        checkpoint=checkpoint_state,
        tracker=tracker,
    )
    if rank == 0:
        _log_artifacts(tracker, unwrap(model), config, example[0] if example else None)


def _log_artifacts(tracker: Tracker, model: PointerNetwork, config: PointerTrainConfig, batch: PointerBatch | None) -> None:
    """The config, and a picture of one held-out example: its mels, the known pointers and
    the network's (argmax, teacher-forced in edit mode)."""
    from pipelines.figures import pointer_figure

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config.to_dict(), indent=2))
        tracker.artifact(path)
        if batch is None:
            return
        batch = batch.to(next(model.parameters()).device)
        model.eval()
        with torch.inference_mode():
            logits = model(batch.raw_mel[:1], batch.raw_lengths[:1], batch.edit_mel[:1], batch.edit_lengths[:1], batch.pointers[:1]).logits
        raw_frames, edit_frames = int(batch.raw_lengths[0]), int(batch.edit_lengths[0])
        probabilities = torch.softmax(logits[0, :edit_frames].float(), dim=-1)  # [Te, Tr]
        confidence, predicted = probabilities.max(dim=-1)
        pointer_figure(
            Path(folder) / "validation_example.png",
            raw_mel=batch.raw_mel[0, :, :raw_frames].cpu().numpy(),
            edit_mel=batch.edit_mel[0, :, :edit_frames].cpu().numpy(),
            pointers=predicted.cpu().numpy(),
            reference=batch.pointers[0, :edit_frames].cpu().numpy(),
            confidence=confidence.cpu().numpy(),
            frame_rate=config.features.frame_rate,
            title=f"held-out example after training ({config.model.mode} mode)",
        )
        tracker.artifact(Path(folder) / "validation_example.png")


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(run))
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
