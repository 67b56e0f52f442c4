"""``jingle train pointer``, ``jingle conform`` and ``jingle edit`` on the session's Ray,
with tiny models on generated edit pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from mlflow.tracking import MlflowClient

from jingle.datasets.edits import RULES, make_conform_pair, make_rule_pair, write_pointer_corpus
from jingle.datasets.features import MelFeatures
from jingle.training.checkpoints import load_state
from jingle.pipelines import preprocess_pointer, train_pointer
from jingle.pipelines.cli import main as jingle
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.run_spec import parse_overrides
from jingle.pipelines.tracking import tracking_uri

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
FEATURES = MelFeatures()
TINY = [
    "model.model_dim=32", "model.heads=2", "model.encoder_layers=1", "model.decoder_layers=1", "model.feedforward_dim=64",
    "data.max_edit_frames=120", "data.max_raw_frames=300", "data.repeats_per_epoch=1", "data.bucket_batches=2",
    "training.batch_size=2", "training.warmup_steps=2", "training.validation_fraction=0.2",
]


def preprocess(pairs: Path, out: Path, config: str) -> None:
    preprocess_pointer.run(preprocess_pointer.spec(pairs=str(pairs), out=out, config=config, quiet=True))


def train(shards: Path, storage: Path, config: str, *extra: str, workers: int = 2, name: str = "tiny"):
    overrides = parse_overrides([*TINY, *extra])
    return train_pointer.run(train_pointer.spec(data=str(shards), config=config, storage=storage, name=name, workers=workers,
                                                overrides=overrides))


@pytest.fixture(scope="module")
def conform_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("pointer-conform")
    pairs = [make_conform_pair(seed, seconds=8.0, features=FEATURES, processed=seed % 2 == 1) for seed in range(6)]
    write_pointer_corpus(root / "pairs", pairs, FEATURES)
    config = str(REPO / "configs/pointer/mini.json")
    preprocess(root / "pairs", root / "shards", config)
    summary = train(root / "shards", root / "runs", config, "training.epochs=2")
    return root, pairs, summary


def test_training_reports_checkpoints_and_tracks_in_mlflow(conform_run):
    root, _, summary = conform_run
    state = load_state(summary.latest_checkpoint, kind="pointer")
    assert state.epoch == 2 and state.step == summary.step > 0
    assert PointerTrainConfig.from_dict(state.config).model.model_dim == 32
    assert state.codec["name"] == "logmel" and state.codec["frame_rate"] == FEATURES.frame_rate
    assert {"val_total", "val_accuracy_within_2", "total"} <= set(summary.metrics)
    assert sorted(p.name for p in (root / "runs" / "tiny" / "workers").iterdir()) == ["rank-0.json", "rank-1.json"]
    client = MlflowClient(tracking_uri(str(root / "runs")))
    run = client.get_run(summary.run_id)
    assert {"total", "val_total", "val_accuracy_within_2"} <= set(run.data.metrics)
    assert run.data.params["config.model.mode"] == "conform"
    assert {"config.json", "validation_example.png"} <= {artifact.path for artifact in client.list_artifacts(summary.run_id)}


def test_rerun_resumes_the_step_counter(conform_run, tmp_path):
    root, _, first = conform_run
    again = train(root / "shards", root / "runs", str(REPO / "configs/pointer/mini.json"), "training.epochs=3", name="tiny")
    assert again.epoch == 3 and again.step == first.step * 3 // 2
    assert again.run_id == first.run_id


def test_training_refuses_fusion_shards_and_other_features(conform_run, tmp_path, capsys):
    root, _, _ = conform_run
    code = jingle(["train", "pointer", "--data", str(root / "shards"), "--config", str(REPO / "configs/pointer/mini.json"),
                   "--override", "features.n_mels=64", "--override", "model.n_mels=64", "--storage", str(tmp_path)])
    assert code == 2 and "features" in capsys.readouterr().err
    code = jingle(["train", "pointer", "--data", str(root / "shards"), "--config", str(REPO / "configs/pointer/mini.json"),
                   "--override", "model.mode=edit", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "augmentation.crop must be off in edit mode" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("method", ["network", "align"])
def test_conform_writes_an_edl_a_pointers_file_and_a_figure(conform_run, tmp_path, method):
    root, pairs, summary = conform_run
    pair = pairs[1]
    out = tmp_path / f"{method}.json"
    argv = ["conform", str(root / "pairs/raw" / f"{pair.name}.wav"), str(root / "pairs/edit" / f"{pair.name}.wav"), "-o", str(out), "--method", method]
    if method == "network":
        argv += ["--checkpoint", summary.latest_checkpoint]
    assert jingle(argv) == 0
    edl = json.loads(out.read_text())
    pointers = np.load(out.with_suffix(".npy"))
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert len(pointers) == edl["edit_frames"] == len(pair.pointers)
    assert edl["segments"] and all(0 <= s["start_s"] < s["end_s"] <= len(pair.raw) / FEATURES.sample_rate + 0.05 for s in edl["segments"])
    assert all(0 <= s["confidence"] <= 1 for s in edl["segments"])
    if method == "align":  # the alignment alone recovers a processed edit
        assert np.mean(np.abs(pointers - pair.pointers) <= 2) > 0.95
        assert len(edl["segments"]) == len(pair.segments)


def test_conform_fails_cleanly(conform_run, tmp_path, capsys):
    root, pairs, summary = conform_run
    raw, edited = str(root / "pairs/raw" / f"{pairs[0].name}.wav"), str(root / "pairs/edit" / f"{pairs[0].name}.wav")
    assert jingle(["conform", raw, edited, "-o", str(tmp_path / "x.json")]) == 2
    assert "--checkpoint is needed" in capsys.readouterr().err
    assert jingle(["edit", raw, "-o", str(tmp_path / "x.wav"), "--checkpoint", summary.latest_checkpoint]) == 2
    assert "use it with jingle conform" in capsys.readouterr().err
    assert jingle(["conform", raw, str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.json"), "--method", "align"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_edit_mode_trains_and_generates_an_edit(ray_session, tmp_path):
    pairs = [make_rule_pair(seed, RULES[seed % 3], seconds=12.0, features=FEATURES) for seed in range(4)]
    write_pointer_corpus(tmp_path / "pairs", pairs, FEATURES, labels="edl")
    config = str(REPO / "configs/pointer/edit-mini.json")
    preprocess(tmp_path / "pairs", tmp_path / "shards", config)
    summary = train(tmp_path / "shards", tmp_path / "runs", config, "training.epochs=1", "data.max_edit_frames=900",
                    "data.max_raw_frames=900", workers=1, name="edit")
    # a stereo 44.1 kHz raw: the edit keeps the file's own rate and channels
    raw = tmp_path / "raw.wav"
    soundfile.write(raw, np.stack([pairs[0].raw, pairs[0].raw], axis=1)[: 16_000 * 6], 16_000, subtype="FLOAT")
    out = tmp_path / "edited.wav"
    for beam in ("1", "2"):
        assert jingle(["edit", str(raw), "-o", str(out), "--checkpoint", summary.latest_checkpoint, "--beam", beam, "--max-seconds", "3"]) == 0
        info = soundfile.info(out)
        assert info.channels == 2 and info.samplerate == 16_000 and 0 < info.duration <= 3.2
        result = json.loads(out.with_suffix(".json").read_text())
        assert result["beam"] == int(beam) and result["segments"]
        assert sum(s["end_s"] - s["start_s"] for s in result["segments"]) == pytest.approx(result["edit_frames"] / FEATURES.frame_rate, abs=0.05)
        assert out.with_suffix(".png").exists()
