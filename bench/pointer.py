"""The pointer network's figures: alignment, conform (network against alignment) and edit.

    python bench/pointer.py [--work DIR] [--smoke] [--ray-address ADDR]
        [--train-pairs 48] [--test-pairs 12] [--seconds 20] [--edit-train-pairs 36]

Everything runs through the pipeline's own entry points (``preprocess_pointer.run``,
``train_pointer.run``, the conform and edit decoding) on edit pairs generated with known
pointers (``datasets/edits.py``), training pairs and held-out pairs from disjoint seeds:

1. **alignment, clean pairs**: the dynamic-programming alignment alone on held-out clean
   conform edits (random cuts, repeats, reorders with crossfades); the fraction of edit
   frames within ±2 frames of the known pointers (aim: >= 0.95).
2. **conform, processed pairs**: ``configs/pointer/mini.json`` trained on conform pairs
   (half of them post-processed: gain, EQ tilt, noise, soft compression) within the
   issue's budget of 10 minutes on 2 CPU cores; then, on held-out *processed* pairs, the
   network's accuracy within ±2 frames (and at the cuts) against the alignment's on the
   same pairs: ratio network / alignment.
3. **edit, rule pairs**: the same config in edit mode, trained on recordings made for the
   three rules (remove silent gaps, drop a repeated false start, loop a marked section);
   on held-out raw recordings, how often the generated EDL (greedy and beam 3) matches the
   rule's EDL within ±2 frames at every segment boundary, against the unedited recording
   as the baseline.

The figures are printed and written to ``WORK/results.json``. ``--smoke`` runs every step
on a handful of short pairs with one epoch: it checks that the benchmark runs; its
figures mean nothing.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import add_ray_address_argument, describe_machine, start_ray
from jingle.datasets.alignment import align, segments_from_pointers
from jingle.datasets.edits import RULES, EditPair, make_conform_pair, make_rule_pair, write_pointer_corpus
from jingle.datasets.features import MelFeatures
from jingle.models.pointer_decoding import generate_edit
from jingle.pipelines import preprocess_pointer, train_pointer
from jingle.pipelines.common import OneLineParser
from jingle.pipelines.conform import NETWORK_JUMP_PENALTY, conform_with_network
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.pointer_inference import load_pointer
from jingle.pipelines.run_spec import parse_overrides

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 2  # frames
TRAINING_BUDGET_SECONDS = 600
# The heavy processing strength (datasets/edits.py ``process``): -32 dB EQ tilt, 15 dB SNR
# noise, hard compression; strength 1 is the "finished edit" processing.
HEAVY = 6.0


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="bench/pointer.py", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--work", default="bench-pointer", help="folder for corpora, shards, runs and results.json")
    parser.add_argument("--config", default=str(REPO / "configs/pointer/mini.json"), help="conform training config (default: mini.json)")
    parser.add_argument("--edit-config", default=str(REPO / "configs/pointer/edit-mini.json"), help="edit training config (default: edit-mini.json)")
    parser.add_argument("--edit-seconds", type=float, default=12.0, help="rule recording length (at least 12)")
    parser.add_argument("--train-pairs", type=int, default=48, help="conform training pairs")
    parser.add_argument("--test-pairs", type=int, default=12, help="held-out pairs per figure")
    parser.add_argument("--edit-train-pairs", type=int, default=36, help="rule-edit training pairs")
    parser.add_argument("--seconds", type=float, default=20.0, help="raw recording length")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    parser.add_argument("--skip", action="append", default=[], choices=("conform", "edit"), help="leave a part out")
    parser.add_argument("--smoke", action="store_true", help="a few short pairs, one epoch: checks that it runs")
    add_ray_address_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_pairs, args.test_pairs, args.edit_train_pairs, args.seconds = 4, 2, 3, 8.0
    return args


def within(predicted: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per edit frame: is the predicted pointer within ±2 frames of the known one."""
    count = min(len(predicted), len(known))
    hit = np.zeros(len(known), dtype=bool)
    hit[:count] = np.abs(predicted[:count] - known[:count]) <= TOLERANCE
    return hit


def jump_frames(pointers: np.ndarray) -> np.ndarray:
    """Edit frames where the known pointers cut (not the continuation of the frame before)."""
    mask = np.zeros(len(pointers), dtype=bool)
    mask[1:] = np.diff(pointers) != 1
    return mask


def edl_matches(generated: np.ndarray, rule: EditPair) -> bool:
    """Same number of segments as the rule's EDL, every boundary within ±2 frames."""
    found = [(s.raw_start, s.raw_end) for s in segments_from_pointers(generated)]
    wanted = [(s.raw_start, s.raw_end) for s in segments_from_pointers(rule.pointers)]
    return len(found) == len(wanted) and all(
        abs(a - c) <= TOLERANCE and abs(b - d) <= TOLERANCE for (a, b), (c, d) in zip(found, wanted)
    )


def write_and_preprocess(pairs: list[EditPair], root: Path, config_path: str, features: MelFeatures) -> Path:
    write_pointer_corpus(root / "pairs", pairs, features, labels="pointers")
    summary = preprocess_pointer.run(preprocess_pointer.spec(pairs=str(root / "pairs"), out=root / "shards", config=config_path, quiet=True))
    if summary.rejects:
        raise RuntimeError(f"generated pairs were rejected: {summary.rejects[:3]}")
    return root / "shards"


def train(shards: Path, work: Path, config_path: str, name: str, overrides: list[str], workers: int) -> tuple[str, float]:
    spec = train_pointer.spec(data=str(shards), config=config_path, storage=work / "runs", name=name, workers=workers,
                              overrides=parse_overrides(overrides))
    started = time.perf_counter()
    summary = train_pointer.run(spec)
    return summary.best_checkpoint, time.perf_counter() - started


def bench_alignment(pairs: list[EditPair], features: MelFeatures, config: PointerTrainConfig) -> dict:
    hits, frames, seconds = 0, 0, 0.0
    for pair in pairs:
        started = time.perf_counter()
        found = align(features.log_mel(pair.raw), features.log_mel(pair.edit), config.alignment)
        seconds += time.perf_counter() - started
        hits += int(within(found.pointers, pair.pointers).sum())
        frames += len(pair.pointers)
    return {"pairs": len(pairs), "frames": frames, "within_2": hits / frames, "seconds_per_pair": seconds / len(pairs)}


def bench_conform(args, work: Path, features: MelFeatures, config: PointerTrainConfig) -> dict:
    # half clean, half processed at strengths spread over [1, HEAVY]
    train_pairs = [
        make_conform_pair(seed, seconds=args.seconds, features=features, processed=seed % 2 == 1,
                          strength=1 + (HEAVY - 1) * ((seed * 0.618) % 1))
        for seed in range(1000, 1000 + args.train_pairs)
    ]
    shards = write_and_preprocess(train_pairs, work / "conform", args.config, features)
    overrides = ["training.epochs=1", "data.repeats_per_epoch=1", "training.batch_size=2"] if args.smoke else []
    checkpoint, train_seconds = train(shards, work, args.config, "conform", overrides, args.workers)
    loaded = load_pointer(checkpoint, mode="conform")
    result = {"train_pairs": len(train_pairs), "train_seconds": train_seconds, "checkpoint": checkpoint, "by_strength": {}}
    for strength in (1.0, HEAVY):
        test_pairs = [
            make_conform_pair(seed, seconds=args.seconds, features=features, processed=True, strength=strength)
            for seed in range(5000, 5000 + args.test_pairs)
        ]
        result["by_strength"][strength] = conform_accuracy(test_pairs, loaded, features, config)
    return result


def conform_accuracy(test_pairs: list[EditPair], loaded, features: MelFeatures, config: PointerTrainConfig) -> dict:
    """Within-±2 accuracy of the network (path and argmax decoding) and of the alignment."""
    totals = {key: 0 for key in ("frames", "jumps", "align", "align_jumps", "network", "network_jumps", "argmax", "argmax_jumps")}
    for pair in test_pairs:
        raw, edit = features.log_mel(pair.raw), features.log_mel(pair.edit)
        known, cuts = pair.pointers, jump_frames(pair.pointers)
        predictions = {
            "align": align(raw, edit, config.alignment).pointers,
            "network": conform_with_network(loaded, raw, edit, decode="path", jump_penalty=NETWORK_JUMP_PENALTY)[0],
            "argmax": conform_with_network(loaded, raw, edit, decode="argmax", jump_penalty=NETWORK_JUMP_PENALTY)[0],
        }
        totals["frames"] += len(known)
        totals["jumps"] += int(cuts.sum())
        for name, pointers in predictions.items():
            hit = within(pointers, known)
            totals[name] += int(hit.sum())
            totals[f"{name}_jumps"] += int(hit[cuts].sum())
    result = {"test_pairs": len(test_pairs), "frames": totals["frames"], "cuts": totals["jumps"]}
    for name in ("align", "network", "argmax"):
        result[f"{name}_within_2"] = totals[name] / totals["frames"]
        result[f"{name}_cuts_within_2"] = totals[f"{name}_jumps"] / max(1, totals["jumps"])
    result["network_of_align"] = result["network_within_2"] / max(result["align_within_2"], 1e-9)
    return result


def bench_edit(args, work: Path, features: MelFeatures) -> dict:
    seconds = args.edit_seconds
    train_pairs = [make_rule_pair(seed, RULES[seed % 3], seconds=seconds, features=features) for seed in range(2000, 2000 + args.edit_train_pairs)]
    shards = write_and_preprocess(train_pairs, work / "edit", args.edit_config, features)
    overrides = ["training.epochs=1", "data.repeats_per_epoch=1", "training.batch_size=1"] if args.smoke else []
    checkpoint, train_seconds = train(shards, work, args.edit_config, "edit", overrides, args.workers)
    loaded = load_pointer(checkpoint, mode="edit")
    test_pairs = [make_rule_pair(seed, RULES[seed % 3], seconds=seconds, features=features) for seed in range(6000, 6000 + args.test_pairs)]
    counts = {key: {"pairs": 0, "greedy": 0, "beam3": 0, "identity": 0} for key in (*RULES, "all")}
    frame_hits, frames = 0, 0
    for pair in test_pairs:
        raw = torch.from_numpy(features.log_mel(pair.raw))
        limit = round(1.5 * raw.shape[1])
        greedy = generate_edit(loaded.model, raw, beam=1, max_frames=limit).pointers.numpy()
        beam = generate_edit(loaded.model, raw, beam=3, max_frames=limit).pointers.numpy()
        identity = np.arange(raw.shape[1])
        frame_hits += int(within(greedy, pair.pointers).sum())
        frames += len(pair.pointers)
        for key in (pair.kind, "all"):
            counts[key]["pairs"] += 1
            counts[key]["greedy"] += edl_matches(greedy, pair)
            counts[key]["beam3"] += edl_matches(beam, pair)
            counts[key]["identity"] += edl_matches(identity, pair)
    return {
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "train_seconds": train_seconds,
        "checkpoint": checkpoint,
        "greedy_frames_within_2": frame_hits / max(1, frames),
        "edl_match": {key: {name: value / max(1, c["pairs"]) for name, value in c.items() if name != "pairs"} | {"pairs": c["pairs"]}
                      for key, c in counts.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("ray").setLevel(logging.WARNING)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start_ray(args.ray_address)
    config = PointerTrainConfig.from_file(args.config)
    features = config.features
    results = {"machine": describe_machine(), "config": args.config, "seconds": args.seconds, "smoke": args.smoke}
    clean = [make_conform_pair(seed, seconds=args.seconds, features=features, processed=False) for seed in range(4000, 4000 + args.test_pairs)]
    results["alignment"] = bench_alignment(clean, features, config)
    a = results["alignment"]
    print(f"alignment, clean held-out pairs: {a['within_2']:.3f} of {a['frames']} edit frames within ±2 (aim >= 0.95), "
          f"{a['seconds_per_pair']:.2f} s per {args.seconds:g} s pair", flush=True)
    if "conform" not in args.skip:
        results["conform"] = c = bench_conform(args, work, features, config)
        budget = "within" if c["train_seconds"] <= TRAINING_BUDGET_SECONDS else "OVER"
        print(f"conform training: {c['train_pairs']} pairs, {c['train_seconds'] / 60:.1f} min ({budget} the 10 min budget)", flush=True)
        for strength, r in c["by_strength"].items():
            print(f"conform, held-out pairs processed at strength {strength:g}, within ±2 frames: network {r['network_within_2']:.3f} "
                  f"vs alignment {r['align_within_2']:.3f} -> {r['network_of_align']:.2f}x  "
                  f"(network argmax without the path: {r['argmax_within_2']:.3f})", flush=True)
            print(f"  at the cuts ({r['cuts']} frames): network {r['network_cuts_within_2']:.3f} vs alignment {r['align_cuts_within_2']:.3f}", flush=True)
    if "edit" not in args.skip:
        results["edit"] = e = bench_edit(args, work, features)
        print(f"edit training: {e['train_pairs']} rule pairs, {e['train_seconds'] / 60:.1f} min", flush=True)
        for key, match in e["edl_match"].items():
            print(f"edit, EDL matches the rule's within ±2 frames [{key}, {match['pairs']} pairs]: greedy {match['greedy']:.2f}, "
                  f"beam 3 {match['beam3']:.2f} vs unedited {match['identity']:.2f}", flush=True)
        print(f"  greedy edit frames within ±2 of the rule's: {e['greedy_frames_within_2']:.3f}", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
