"""The run specs: what the command line parses into, and what they refuse in one line."""

from __future__ import annotations

import re

import pytest

from jingle.core.storage import Location
from jingle.pipelines import train_fusion, tune_fusion, tune_pointer
from jingle.pipelines.common import UsageError
from jingle.pipelines.run_spec import TrainSpec, TuneSpec


def test_the_command_line_parses_into_the_spec_a_caller_would_build(tmp_path):
    args = train_fusion.build_parser().parse_args(
        ["--data", "shards", "--config", "configs/fusion.json", "--storage", str(tmp_path), "--workers", "3", "--gpu",
         "--override", "training.epochs=2", "--override", "masking.strategy=energy", "--codec-checkpoint", "weights.pt",
         "--validation", "held", "--resume", "--name", "n"])
    built = train_fusion.spec(data="shards", config="configs/fusion.json", storage=tmp_path, workers=3, use_gpu=True,
                              overrides={"training.epochs": 2, "masking.strategy": "energy"},
                              task_options={"codec_checkpoint": "weights.pt"}, validation="held", resume=True, name="n")
    assert TrainSpec.from_args("fusion", args) == built
    assert isinstance(built.storage, Location) and built.storage == Location.of(tmp_path)


def test_run_names_default_to_the_config_and_the_space():
    assert train_fusion.spec(data="d", config="configs/demo.json").run_name == "fusion-demo"
    assert tune_pointer.spec(data="d", space="tune_spaces/pointer.yaml").run_name == "tune-pointer-pointer"
    assert tune_pointer.spec(data="d", space="s.yaml").config.endswith("configs/pointer/mini.json")


@pytest.mark.parametrize("bad, message", [
    ({"samples": 0}, "--samples must be at least 1, got 0"),
    ({"grace_period": 0}, "--grace-period must be at least 1 epoch, got 0"),
    ({"max_epochs": 2, "grace_period": 3}, "--max-epochs (2) is below --grace-period (3)"),
    ({"reduction_factor": 1.0}, "--reduction-factor must be above 1, got 1.0"),
    ({"workers_per_trial": 0}, "--workers-per-trial must be at least 1, got 0"),
    ({"search": "grid"}, "--search must be one of random, optuna, got 'grid'"),
])
def test_a_bad_search_is_refused_before_anything_runs(bad, message):
    with pytest.raises(UsageError) as refused:
        tune_fusion.spec(data="d", space="s.yaml", **bad)
    assert message in str(refused.value)


def test_a_spec_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        TrainSpec("fusion", "d", "c")  # positional: which is which would be a guess
    spec = TuneSpec(task="fusion", data="d", space="s.yaml")
    with pytest.raises(AttributeError):
        spec.samples = 3
    with pytest.raises(UsageError, match="--workers must be at least 1, got 0"):
        TrainSpec(task="fusion", data="d", config="c", workers=0)


def test_preprocessing_specs_refuse_a_bad_cut_or_shard_size_in_one_line():
    from jingle.pipelines import preprocess_fusion, preprocess_pointer

    with pytest.raises(UsageError, match="segment_seconds must be positive, got 0"):
        preprocess_fusion.spec(pairs="p", out="o", segment_seconds=0)
    with pytest.raises(UsageError, match="--rows-per-shard must be at least 1, got 0"):
        preprocess_pointer.spec(pairs="p", out="o", rows_per_shard=0)
    args = preprocess_fusion.build_parser().parse_args(["--pairs", "p", "--out", "o", "--segment-seconds", "2", "--tail", "pad",
                                                        "--if-busy", "wait", "--verify"])
    parsed = preprocess_fusion.FusionPreprocessSpec.from_args(args)
    assert parsed == preprocess_fusion.spec(pairs="p", out="o", segment_seconds=2, tail="pad", if_busy="wait", verify=True)
    assert parsed.segmenting.segment_seconds == 2 and parsed.segmenting.tail == "pad"


def test_inference_specs_are_the_commands_flags_and_refuse_in_one_line():
    from jingle.pipelines import conform, edit, evaluate_fusion, fuse
    from jingle.pipelines.run_spec import spec_from_args

    args = fuse.build_parser().parse_args(["--checkpoint", "c", "in.wav", "tg.wav", "-o", "o.wav", "--pair", "2", "--device", "cpu"])
    assert spec_from_args(fuse.FuseSpec, args) == fuse.spec(checkpoint="c", input="in.wav", target="tg.wav", output="o.wav",
                                                            pair=2, device="cpu")
    args = evaluate_fusion.build_parser().parse_args(["a.wav", "b.wav", "c.wav", "--out", "o", "--compare", "x=y"])
    parsed = spec_from_args(evaluate_fusion.EvaluateFusionSpec, args)
    assert parsed.files == ("a.wav", "b.wav", "c.wav") and parsed.compare == ("x=y",)
    for bad, message in [
        (lambda: fuse.spec(checkpoint="c", pair="worst"), "--pair must be best, mean or a pair index of 0 or more, got 'worst'"),
        (lambda: fuse.spec(checkpoint="c", pair=-1), "got -1"),
        (lambda: fuse.spec(checkpoint="c", batch="pairs", input="in.wav", out="fused"), "--batch takes no INPUT.wav"),
        (lambda: fuse.spec(checkpoint="c", batch="pairs"), "--batch needs --out DIR"),
        (lambda: fuse.spec(checkpoint="c", input="in.wav", target="tg.wav", output="o.wav", actors=2), "--out and --actors go with --batch"),
        (lambda: fuse.spec(checkpoint="c", input="in.wav", output="o.wav"), "give INPUT.wav TARGET.wav -o OUT.wav"),
        (lambda: fuse.spec(checkpoint="c", input="in.wav", target="tg.wav", output="o.mp3"), "-o o.mp3 must end in .wav"),
        (lambda: conform.spec(raw="r", edited="e", out="o"), "--checkpoint is needed with --method network"),
        (lambda: conform.spec(raw="r", edited="e", out="o", method="guess"), "--method must be one of network, align, got 'guess'"),
        (lambda: edit.spec(raw="r", out="o", checkpoint="c", beam=0), "--beam must be at least 1, got 0"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            bad()
