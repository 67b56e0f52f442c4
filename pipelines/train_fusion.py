"""``jingle train fusion``: the fusion model on latent shards, with Ray Train and MLflow.

    python -m pipelines.train_fusion --data SHARDS --config configs/fusion.json
        [--workers N] [--gpu] [--storage DIR] [--name NAME] [--resume]

A TorchTrainer runs ``fusion_train_loop`` on every worker (DDP: gloo on CPU, nccl on GPU);
the shards reach the workers through Ray Data, streamed, split by pair id into training and
validation. Checkpoints go to ``STORAGE/NAME``; MLflow to ``STORAGE/mlflow.db`` unless
``MLFLOW_TRACKING_URI`` is set. Rerunning with the same storage and name (or ``--resume``)
continues from the latest checkpoint with the same step counter.
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
from pathlib import Path

import numpy as np
import ray
import torch

from models.cascade import build_fusion_model
from models.checkpoints import TrainingState
from models.codecs import build_codec
from models.fusion_config import FusionTrainConfig
from models.training import FusionObjective, build_optimizer, build_scheduler, evaluate, train_step, unwrap
from pipelines.common import EntryPoint, UsageError, add_common_arguments, init_ray, reporting
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

PROG = "jingle train fusion"
# TrainSummary and parse_overrides are re-exported: callers (demo, bench, tests) import them here.
__all__ = ["TrainSummary", "build_parser", "fusion_train_loop", "main", "parse_overrides", "run"]
LATENT_COLUMNS = ["input_latent", "target_latent"]
# Validation terms reported (present for every model and codec).
VALIDATION_TERMS = ("total", "spectral", "spectral_input", "spectral_target", "rms_in", "rms_tgt", "novelty", "corr_cost")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser, "fusion")
    parser.add_argument("--codec-checkpoint", default=None, help="EnCodec weights when the shards used EnCodec")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> TrainSummary:
    config = FusionTrainConfig.from_file(args.config).with_overrides(parse_overrides(args.override))
    data = ShardData.open(args.data)
    codec = build_codec(data.codec["name"], checkpoint=args.codec_checkpoint)
    if codec.id != data.codec["id"]:
        raise UsageError(f"--data was encoded with codec {data.codec['id']}, but the codec given is {codec.id}")
    if config.model.latent_dim != codec.dim:
        raise UsageError(f"model.latent_dim is {config.model.latent_dim} but the codec's latents have {codec.dim} channels")
    frames = codec.frames_for_seconds(data.segmenting["segment_seconds"])
    if config.model.agent == "adaptive_window" and frames < config.model.adaptive_window.min_source_frames:
        raise UsageError(
            f"the adaptive window agent needs segments of at least {config.model.adaptive_window.min_source_frames} frames; "
            f"these shards have {frames} ({data.segmenting['segment_seconds']} s): preprocess with a longer --segment-seconds"
        )
    init_ray(args.num_cpus)
    use_gpu = bool(args.gpu)
    workers = count_workers(args.workers, use_gpu)
    train_ids, validation_ids = split_pair_ids(sorted(data.rows_by_pair), config.training.validation_fraction, config.training.seed)
    train_rows = sum(data.rows_by_pair[pair_id] for pair_id in train_ids)
    steps_per_epoch = (train_rows // workers) // config.training.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"{train_rows} training segments cannot fill one batch of {config.training.batch_size} on each of {workers} workers: "
            f"lower training.batch_size or --workers"
        )
    place = place_run(args, kind="fusion", codec_id=codec.id)
    run_id = open_tracking_run(storage=place.storage, experiment="jingle-fusion", run_name=place.name, params={"config": config.to_dict(), "data": data.root, "workers": workers})
    weights = codec.worker_state()
    loop_config = {
        "config": config.to_dict(),
        "codec_name": codec.name,
        "codec_state": [ray.put(dict(weights))] if weights is not None else None,
        "codec": codec.describe(),
        "data": {"shards": data.root, "segment_seconds": data.segmenting["segment_seconds"], "train_pairs": len(train_ids), "validation_pairs": len(validation_ids)},
        "steps_per_epoch": steps_per_epoch,
        "tracking_uri": tracking_uri(place.storage),
        "run_id": run_id,
        "run_dir": str(place.run_dir),
        "use_gpu": use_gpu,
    }
    result = run_trainer(
        fusion_train_loop,
        loop_config=loop_config,
        datasets=data.datasets(train_ids, validation_ids, LATENT_COLUMNS),
        workers=workers,
        use_gpu=use_gpu,
        storage=place.storage,
        name=place.name,
        num_to_keep=config.training.num_to_keep,
        max_failures=config.training.max_failures,
    )
    return summarize(result, kind="fusion", place=place, has_validation=bool(validation_ids), run_id=run_id)


# ---------------------------------------------------------------- the worker loop


def fusion_train_loop(loop_config: dict) -> None:
    """Per-worker training: wires data, model, checkpoints and reporting, nothing more."""
    config = FusionTrainConfig.from_dict(loop_config["config"])
    training = config.training
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    record_worker(loop_config["run_dir"], rank)
    if device.type == "cpu":
        torch.set_num_threads(worker_torch_threads(context.get_local_world_size()))
    torch.manual_seed(training.seed)  # identical initial weights on every worker
    codec_state = ray.get(loop_config["codec_state"][0]) if loop_config["codec_state"] else None
    codec = build_codec(loop_config["codec_name"], state=codec_state).to(device)
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=codec, config=config, cascade=config.model.num_stages == 2).to(device)
    optimizer = build_optimizer(model, training)
    steps_per_epoch = loop_config["steps_per_epoch"]
    scheduler = build_scheduler(optimizer, training, total_steps=steps_per_epoch * training.epochs)
    discriminator_optimizer = (
        torch.optim.AdamW(objective.discriminator.parameters(), lr=training.discriminator_learning_rate)
        if objective.discriminator is not None
        else None
    )
    loop = LoopState()
    state = restore("fusion", loop_config["codec"]["id"])
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if discriminator_optimizer is not None and state.discriminator:
            objective.discriminator.load_state_dict(state.discriminator)
            discriminator_optimizer.load_state_dict(state.discriminator_optimizer)
        loop = LoopState(state.step, state.epoch, state.extra.get("best_validation", float("inf")))
    model = ray.train.torch.prepare_model(model)
    autocast = torch.bfloat16 if training.mixed_precision and device.type == "cuda" else None
    tracker = Tracker(loop_config["tracking_uri"], loop_config["run_id"], enabled=rank == 0)
    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation") if loop_config["data"]["validation_pairs"] else None
    # One held-out segment kept from the validation pass for the MLflow example: every
    # worker must read its split together, so rank 0 cannot go back for one alone.
    example: dict[str, torch.Tensor] = {}
    generator = torch.Generator()

    def checkpoint_state(epoch: int) -> TrainingState | None:
        if rank != 0:
            return None
        return TrainingState(
            kind="fusion",
            model=unwrap(model).state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            discriminator=objective.discriminator.state_dict() if objective.discriminator is not None else None,
            discriminator_optimizer=discriminator_optimizer.state_dict() if discriminator_optimizer else None,
            step=loop.step,
            epoch=epoch,
            config=config.to_dict(),
            codec=loop_config["codec"],
            data=loop_config["data"],
            extra={"best_validation": loop.best_validation, "mlflow_run_id": loop_config["run_id"]},
        )

    def epoch_batches(epoch: int):
        generator.manual_seed(training.seed * 1_000_003 + rank * 10_007 + loop.step)
        return train_shard.iter_torch_batches(batch_size=training.batch_size, drop_last=True, device=device)

    def step(batch) -> dict[str, float]:
        return train_step(
            model, batch, objective, optimizer,
            scheduler=scheduler, generator=generator, grad_clip=training.grad_clip,
            autocast_dtype=autocast, discriminator_optimizer=discriminator_optimizer,
        )

    run_epochs(
        training=training,
        steps_per_epoch=loop_config["steps_per_epoch"],
        state=loop,
        run_dir=loop_config["run_dir"],
        epoch_batches=epoch_batches,
        train_step=step,
        validate=lambda: _validate(model, validation_shard, objective, training.batch_size, device, example),
        checkpoint=checkpoint_state,
        tracker=tracker,
    )
    if rank == 0:
        _log_artifacts(tracker, unwrap(model), codec, config, example)


def _keep_first(batches, example: dict[str, torch.Tensor]):
    """Pass batches through, copying the first example of the first batch into ``example``."""
    for batch in batches:
        if not example:
            example.update({key: value[:1].detach().clone() for key, value in batch.items()})
        yield batch


def _validate(model, shard, objective, batch_size: int, device, example: dict[str, torch.Tensor]) -> dict[str, float]:
    if shard is None:
        return {}
    example.clear()
    batches = _keep_first(shard.iter_torch_batches(batch_size=batch_size, device=device), example)
    means = evaluate(unwrap(model), batches, objective).means()
    return {f"val_{term}": means[term] for term in VALIDATION_TERMS if term in means}


def _log_artifacts(tracker: Tracker, model, codec, config: FusionTrainConfig, batch: dict[str, torch.Tensor]) -> None:
    """The config, a mask picture and a fused example (WAV and PNG) of a held-out segment."""
    from models.masking import apply_complementary_mask
    from pipelines.figures import fusion_figure
    from pipelines.masks import plot_masks

    batch = batch or None
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        tracker.artifact(folder / "config.json")
        if batch is None:
            return
        input_latent = batch["input_latent"].float()
        target_latent = batch["target_latent"].float()
        masking = config.masking
        masked = apply_complementary_mask(input_latent.cpu(), target_latent.cpu(), masking, generator=torch.Generator().manual_seed(0),
                                          fill_value=codec.silence_latent().cpu().view(1, -1, 1))
        plot_masks(masked, input_latent.cpu(), target_latent.cpu(), codec.frame_rate, folder / f"mask_{masking.strategy}.png", codec_name=codec.name)
        tracker.artifact(folder / f"mask_{masking.strategy}.png")
        model.eval()
        with torch.inference_mode():
            output = model(input_latent, target_latent)
            audio = {
                "input": codec.decode(input_latent)[0, 0].float().cpu().numpy(),
                "target": codec.decode(target_latent)[0, 0].float().cpu().numpy(),
                "output": codec.decode(output.outputs[0])[0, 0].float().cpu().numpy(),
            }
        from datasets.audio import write_wav

        write_wav(folder / "fused_example.wav", np.clip(audio["output"], -1, 1), codec.sample_rate, subtype="FLOAT")
        fusion_figure(folder / "fused_example.png", input_audio=audio["input"], target_audio=audio["target"],
                      output_audio=audio["output"], sample_rate=codec.sample_rate, title="held-out segment after training")
        tracker.artifact(folder / "fused_example.wav")
        tracker.artifact(folder / "fused_example.png")


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(run))
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
