"""The fusion model's training task: latent pairs -> the cascade and its objective.

Shape letters: B batch, D latent channels, T frames.

The codec is frozen and travels to the workers (its weights through the object store in a
Ray run); the objective masks and shuffles in training and takes the losses in the codec's
domain (``training/fusion_training.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jingle.datasets.shard_rows import Rows
from jingle.models.cascade import build_fusion_model
from jingle.models.codecs import build_codec
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.fusion_training import ArrangementValidator, FusionObjective, evaluate, train_step
from jingle.training.optimization import unwrap
from jingle.pipelines.common import UsageError, add_codec_checkpoint_argument
from jingle.pipelines.loop import Selection
from jingle.pipelines.tasks.base import Task, TaskPlan, TaskWorker

LATENT_COLUMNS = ("input_latent", "target_latent")
ARRANGEMENT_COLUMNS = ("arrangement_latent", "has_arrangement")  # shards of pairs with reference arrangements
# Validation terms reported (the teacher's only where the validation pairs have arrangements).
VALIDATION_TERMS = ("total", "reconstruction", "spectral", "spectral_input", "spectral_target", "rms_in", "rms_tgt", "novelty", "corr_cost",
                    "teacher")


class FusionTask(Task):
    name = "fusion"
    config_class = FusionTrainConfig
    columns = LATENT_COLUMNS
    shown_metrics = ("total", "val_total", "val_score", "val_score_plain_mix", "val_score_stationary")
    # the fixed arrangement score, not the loss a search reweights (evaluation/arrangement.py)
    selection = Selection("val_score", "max")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_codec_checkpoint_argument(parser)

    def data_columns(self, config: FusionTrainConfig) -> tuple[str, ...]:
        """The latents, and with the teacher term the reference arrangements."""
        return LATENT_COLUMNS + (ARRANGEMENT_COLUMNS if config.losses.teacher_weight > 0 else ())

    def unranked(self, config: FusionTrainConfig) -> str | None:
        if config.validation.score_segments == 0:
            return "validation.score_segments is 0: trials would report no val_score to rank them by; set it to 1 or more"
        return None

    def plan(self, config: FusionTrainConfig, data: Any, *, train_ids: list[str], workers: int, options: Mapping[str, Any]) -> TaskPlan:
        codec = build_codec(data.codec["name"], checkpoint=options.get("codec_checkpoint"))
        if codec.id != data.codec["id"]:
            raise UsageError(f"--data was encoded with codec {data.codec['id']}, but the codec given is {codec.id}")
        if config.model.latent_dim != codec.dim:
            raise UsageError(f"model.latent_dim is {config.model.latent_dim} but the codec's latents have {codec.dim} channels")
        if config.losses.teacher_weight > 0 and not data.settings.get("arrangements"):
            raise UsageError(
                f"losses.teacher_weight is {config.losses.teacher_weight} but --data {data.root} holds no reference arrangements: "
                "preprocess pairs that have arrangement/ files, or set losses.teacher_weight to 0"
            )
        if config.losses.teacher_weight > 0 and config.model.agent == "adaptive_window":
            raise UsageError("losses.teacher_weight needs an output of the pair's frames: the adaptive window agent writes windows")
        segment_seconds = data.segmenting["segment_seconds"]
        frames = codec.frames_for_seconds(segment_seconds)
        needed = config.model.adaptive_window.min_source_frames
        if config.model.agent == "adaptive_window" and frames < needed:
            raise UsageError(
                f"the adaptive window agent needs segments of at least {needed} frames; "
                f"these shards have {frames} ({segment_seconds} s): preprocess with a longer --segment-seconds"
            )
        train_rows = sum(data.rows_by_pair[pair_id] for pair_id in train_ids)
        steps_per_epoch = (train_rows // workers) // config.training.batch_size
        if steps_per_epoch < 1:
            raise UsageError(
                f"{train_rows} training segments cannot fill one batch of {config.training.batch_size} on each of {workers} workers: "
                f"lower training.batch_size or --workers"
            )
        weights = codec.worker_state()
        return TaskPlan(
            steps_per_epoch=steps_per_epoch,
            codec=codec.describe(),
            payload={"codec_name": codec.name},
            shared={"codec_state": dict(weights) if weights is not None else None},
            recorded={"segment_seconds": segment_seconds},
        )

    def build_model(self, config: FusionTrainConfig) -> nn.Module:
        return build_fusion_model(config.model)

    def worker(self, config: FusionTrainConfig, plan: TaskPlan, device: torch.device) -> "FusionWorker":
        return FusionWorker(config, plan, device, self.build_model(config))


class FusionWorker(TaskWorker):
    def __init__(self, config: FusionTrainConfig, plan: TaskPlan, device: torch.device, model: nn.Module) -> None:
        self.config, self.device, self.model = config, device, model
        self.codec = build_codec(plan.payload["codec_name"], state=plan.shared.get("codec_state")).to(device)
        self.objective = FusionObjective(codec=self.codec, config=config, cascade=config.model.num_stages == 2).to(device)
        self.validator = ArrangementValidator(self.codec, config.validation.score_segments, config.validation.score_shortcuts)
        discriminator = self.objective.discriminator
        self.discriminator_optimizer = (
            torch.optim.AdamW(discriminator.parameters(), lr=config.losses.discriminator_learning_rate) if discriminator is not None else None
        )
        training = config.training
        self.autocast = torch.bfloat16 if training.mixed_precision and device.type == "cuda" else None
        self.generator = torch.Generator()
        self.example: dict[str, torch.Tensor] = {}  # a held-out segment for the MLflow example

    def _tensors(self, rows: Rows, batch_size: int, *, epoch: int, drop_last: bool) -> Iterator[dict[str, torch.Tensor]]:
        for batch in rows.batches(batch_size, epoch=epoch, drop_last=drop_last):
            # [B, D, T] latents (and [B] has_arrangement where the shards hold arrangements)
            yield {name: torch.as_tensor(np.asarray(batch[name])).to(self.device) for name in LATENT_COLUMNS + ARRANGEMENT_COLUMNS
                   if name in batch}

    def batches(self, rows: Rows, *, epoch: int, rank: int, step: int) -> Iterator[dict[str, torch.Tensor]]:
        # target order, masks and noise: from (seed, rank, step), so a resumed run draws alike
        self.generator.manual_seed(self.config.training.seed * 1_000_003 + rank * 10_007 + step)
        return self._tensors(rows, self.config.training.batch_size, epoch=epoch, drop_last=True)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, float]:
        return train_step(
            model, batch, self.objective, optimizer,
            scheduler=scheduler, generator=self.generator, grad_clip=self.config.training.grad_clip,
            autocast_dtype=self.autocast, discriminator_optimizer=self.discriminator_optimizer,
        )

    def validate(self, model: nn.Module, rows: Rows) -> dict[str, float]:
        self.example.clear()
        batch_size = self.config.training.batch_size
        means = evaluate(unwrap(model), self._keep_first(self._tensors(rows, batch_size, epoch=0, drop_last=False)), self.objective)
        metrics = {f"val_{term}": means[term] for term in VALIDATION_TERMS if term in means}
        scored = self.validator(unwrap(model), self._tensors(rows, batch_size, epoch=0, drop_last=False))
        return {**metrics, **{f"val_{name}": value for name, value in scored.items()}}

    def _keep_first(self, batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        for batch in batches:
            if not self.example:
                self.example.update({key: value[:1].detach().clone() for key, value in batch.items()})
            yield batch

    def extra_state(self) -> dict[str, Any]:
        if self.discriminator_optimizer is None:
            return {}
        return {"discriminator": self.objective.discriminator.state_dict(), "discriminator_optimizer": self.discriminator_optimizer.state_dict()}

    def load_extra_state(self, saved: dict[str, Any]) -> None:
        if self.discriminator_optimizer is not None and saved.get("discriminator"):
            self.objective.discriminator.load_state_dict(saved["discriminator"])
            self.discriminator_optimizer.load_state_dict(saved["discriminator_optimizer"])

    def artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """A mask picture and a fused held-out segment (WAV and PNG)."""
        if not self.example:
            return []
        from jingle.datasets.audio import limit_peak, write_wav
        from jingle.models.masking import apply_complementary_mask
        from jingle.pipelines.figures import fusion_figure
        from jingle.pipelines.masks import plot_masks

        codec, masking = self.codec, self.config.masking
        input_latent, target_latent = self.example["input_latent"].float(), self.example["target_latent"].float()
        masked = apply_complementary_mask(input_latent.cpu(), target_latent.cpu(), masking, generator=torch.Generator().manual_seed(0),
                                          fill_value=codec.silence_latent().cpu().view(1, -1, 1))
        mask_picture = folder / f"mask_{masking.strategy}.png"
        plot_masks(masked, input_latent.cpu(), target_latent.cpu(), codec.frame_rate, mask_picture, codec_name=codec.name)
        model = unwrap(model).eval()
        with torch.inference_mode():
            output = model(input_latent, target_latent)
            audio = {
                "input": codec.decode(input_latent)[0, 0].float().cpu().numpy(),
                "target": codec.decode(target_latent)[0, 0].float().cpu().numpy(),
                "output": codec.decode(output.outputs[0])[0, 0].float().cpu().numpy(),
            }
        write_wav(folder / "fused_example.wav", limit_peak(np.nan_to_num(audio["output"])).audio, codec.sample_rate, subtype="FLOAT")
        fusion_figure(folder / "fused_example.png", input_audio=audio["input"], target_audio=audio["target"],
                      output_audio=audio["output"], sample_rate=codec.sample_rate, title="held-out segment after training")
        return [mask_picture, folder / "fused_example.wav", folder / "fused_example.png"]

