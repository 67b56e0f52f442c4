"""The pointer network's training task: stored rows -> augmented, capped, bucketed batches.

Shape letters: B batch, M mel bins, Tr raw frames, Te edit frames.

What is the pointer model's own: rows become augmented samples of capped length (plan 002,
``datasets/augmentation.py``), bucketed by length and padded; the mode (conform or edit)
comes from the config; the checkpoint records the log-mel settings in place of a codec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jingle.datasets.augmentation import Augmentor
from jingle.datasets.pointer_preprocess import TRAINING_COLUMNS, features_id
from jingle.datasets.pointer_sample import PointerBatch, bucketed, cap_lengths, pad_pointer_samples, samples_from_rows
from jingle.datasets.shard_rows import Rows
from jingle.training.optimization import unwrap
from jingle.models.pointer import PointerNetwork
from jingle.training.pointer_loss import build_pointer_loss
from jingle.training.pointer_training import evaluate_pointer, pointer_train_step
from jingle.pipelines.common import UsageError
from jingle.pipelines.loop import Selection
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.tasks.base import Task, TaskPlan, TaskWorker

ROWS_PER_READ = 8


def features_codec(config: PointerTrainConfig) -> dict:
    """What a pointer checkpoint records in place of a codec: the log-mel settings."""
    return {"name": "logmel", "id": features_id(config.features), "frame_rate": config.features.frame_rate, **config.features.to_dict()}


class PointerTask(Task):
    name = "pointer"
    config_class = PointerTrainConfig
    columns = tuple(TRAINING_COLUMNS)
    shown_metrics = ("total", "val_total", "val_accuracy_within_2", "val_jump_accuracy_within_2")
    selection = Selection("val_accuracy_within_2", "max")

    def plan(self, config: PointerTrainConfig, data: Any, *, train_ids: list[str], workers: int, options: Mapping[str, Any]) -> TaskPlan:
        if data.settings["features"] != config.features.to_dict():
            raise UsageError(
                f"--data was made with features {data.settings['features']}, the config asks for {config.features.to_dict()}: "
                f"preprocess again with this --config, or use the config the shards were made with"
            )
        train_rows = sum(data.rows_by_pair[pair_id] for pair_id in train_ids)
        repeats = config.data.repeats_per_epoch
        steps_per_epoch = ((train_rows // workers) * repeats) // config.training.batch_size
        if steps_per_epoch < 1:
            raise UsageError(
                f"{len(train_ids)} training pairs ({repeats} repeats per epoch) cannot fill one batch of "
                f"{config.training.batch_size} on each of {workers} workers: lower training.batch_size or --workers, or raise data.repeats_per_epoch"
            )
        return TaskPlan(steps_per_epoch=steps_per_epoch, codec=features_codec(config))

    def build_model(self, config: PointerTrainConfig) -> nn.Module:
        return PointerNetwork(config.model)

    def worker(self, config: PointerTrainConfig, plan: TaskPlan, device: torch.device) -> "PointerWorker":
        return PointerWorker(config, device, self.build_model(config))


class PointerWorker(TaskWorker):
    def __init__(self, config: PointerTrainConfig, device: torch.device, model: nn.Module) -> None:
        self.config, self.device, self.model = config, device, model
        self.loss = build_pointer_loss(config.losses).to(device)
        self.augmentor = Augmentor(config.augmentation, seed=config.training.seed)
        self.autocast = torch.bfloat16 if config.training.mixed_precision and device.type == "cuda" else None
        self.edit_mode = config.model.mode == "edit"
        self.example: list[PointerBatch] = []  # the first held-out batch, for the MLflow picture

    def _capped(self, sample, generator: torch.Generator):
        data = self.config.data
        return cap_lengths(sample, max_edit_frames=data.max_edit_frames, max_raw_frames=data.max_raw_frames,
                           keep_start=self.edit_mode, generator=generator)

    def batches(self, rows: Rows, *, epoch: int, rank: int, step: int) -> Iterator[PointerBatch]:
        """Rows -> augmented, capped samples -> bucketed, concatenated (B3) and padded
        batches; ``repeats_per_epoch`` passes over the worker's rows, each with fresh draws."""
        config = self.config
        generator = torch.Generator().manual_seed(config.training.seed * 1_000_003 + rank * 10_007 + epoch)

        def samples():
            index = 0
            for repeat in range(config.data.repeats_per_epoch):
                for batch in rows.batches(ROWS_PER_READ, epoch=epoch * config.data.repeats_per_epoch + repeat):
                    for sample in samples_from_rows(batch, min_confidence=config.data.min_confidence):
                        # rank in the index: workers draw different augmentations
                        sample = self.augmentor(sample, epoch=epoch, index=index * 1009 + rank)
                        index += 1
                        yield self._capped(sample, generator)

        groups = bucketed(samples(), batch_size=config.training.batch_size, bucket_batches=config.data.bucket_batches, generator=generator)
        for batch_index, group in enumerate(groups):
            items = [sample for sample, _ in group]
            ends = [ended for _, ended in group]
            if not self.edit_mode:  # B3 joins samples; an edit's start and end must stay its own
                items = self.augmentor.concatenate(items, epoch=epoch, batch_index=batch_index * 1009 + rank)
                ends = [True] * len(items)
            yield pad_pointer_samples(items, ends=ends)

    def step(self, model: nn.Module, batch: PointerBatch, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, float]:
        return pointer_train_step(model, batch.to(self.device), self.loss, optimizer, scheduler=scheduler,
                                  grad_clip=self.config.training.grad_clip, autocast_dtype=self.autocast)

    def _validation_batches(self, rows: Rows) -> Iterator[PointerBatch]:
        """Held-out rows without augmentation, capped as in training (edit mode: from the
        start) with a generator seeded the same every pass, so every epoch sees the same."""
        generator = torch.Generator().manual_seed(0)
        group: list = []
        for batch in rows.batches(ROWS_PER_READ, epoch=0):
            for sample in samples_from_rows(batch, min_confidence=self.config.data.min_confidence):
                group.append(self._capped(sample, generator))
                if len(group) == self.config.training.batch_size:
                    yield pad_pointer_samples([s for s, _ in group], ends=[e for _, e in group])
                    group = []
        if group:
            yield pad_pointer_samples([s for s, _ in group], ends=[e for _, e in group])

    def validate(self, model: nn.Module, rows: Rows) -> dict[str, float]:
        self.example.clear()

        def keep_first(batches: Iterator[PointerBatch]) -> Iterator[PointerBatch]:
            for batch in batches:
                if not self.example:
                    self.example.append(batch)
                yield batch

        means = evaluate_pointer(unwrap(model), keep_first(self._validation_batches(rows)), self.loss)
        return {f"val_{name}": value for name, value in means.items()}

    def artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """A picture of one held-out example: its mels, the known pointers and the
        network's (argmax, teacher-forced in edit mode)."""
        if not self.example:
            return []
        from jingle.pipelines.figures import pointer_figure

        model = unwrap(model).eval()
        batch = self.example[0].to(next(model.parameters()).device)
        with torch.inference_mode():
            logits = model(batch.raw_mel[:1], batch.raw_lengths[:1], batch.edit_mel[:1], batch.edit_lengths[:1], batch.pointers[:1]).logits
        raw_frames, edit_frames = int(batch.raw_lengths[0]), int(batch.edit_lengths[0])
        probabilities = torch.softmax(logits[0, :edit_frames].float(), dim=-1)  # [Te, Tr]
        confidence, predicted = probabilities.max(dim=-1)
        picture = folder / "validation_example.png"
        pointer_figure(
            picture,
            raw_mel=batch.raw_mel[0, :, :raw_frames].cpu().numpy(),
            edit_mel=batch.edit_mel[0, :, :edit_frames].cpu().numpy(),
            pointers=predicted.cpu().numpy(),
            reference=batch.pointers[0, :edit_frames].cpu().numpy(),
            confidence=confidence.cpu().numpy(),
            frame_rate=self.config.features.frame_rate,
            title=f"held-out example after training ({self.config.model.mode} mode)",
        )
        return [picture]
