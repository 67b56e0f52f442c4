"""The model registry: the command line is made from it, and a third model is one task file
plus one config (``tests/toy_model.py``) registered in one call."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from jingle.training.checkpoints import load_state
from jingle.pipelines import cli
from jingle.pipelines.registry import MODELS, Model, get_model, register
from jingle.pipelines.shard_data import ShardData
from jingle.pipelines.tasks import get_task
from jingle.pipelines.tracking import tracking_uri

TOY = Model(name="toy", task="tests.toy_model:ToyTask", default_config="configs/fusion.json",
            train_help="a 1x1 convolution from the input's latent to the target's (a test's model)",
            tune_help="the toy model's learning rate")


@pytest.fixture
def toy_registered():
    register(TOY)
    yield TOY
    MODELS.pop(TOY.name)


def test_the_commands_list_every_registered_model(toy_registered, capsys):
    for command in ("train", "tune"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        listed = capsys.readouterr().out
        assert "fusion" in listed and "pointer" in listed and "toy" in listed
    with pytest.raises(SystemExit):
        cli.main(["preprocess", "--help"])
    assert "toy" not in capsys.readouterr().out  # it trains on the fusion model's shards
    assert get_task("toy").name == "toy"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(Model(name="fusion", task="tests.toy_model:ToyTask", default_config="", train_help="", tune_help=""))
    with pytest.raises(ValueError, match="unknown model 'nothing'"):
        get_model("nothing")


@pytest.mark.ray
def test_a_third_model_trains_through_jingle_train(toy_registered, fusion_train_shards, tmp_path):
    channels = ShardData.open(str(fusion_train_shards), kind="fusion").codec["dim"]
    config = tmp_path / "toy.json"
    config.write_text(json.dumps({"model": {"latent_dim": channels}, "training": {
        "epochs": 3, "batch_size": 2, "learning_rate": 0.01, "warmup_steps": 0, "schedule": "constant", "validation_fraction": 0.25}}))
    code = cli.main(["train", "toy", "--data", str(fusion_train_shards), "--config", str(config), "--workers", "1",
                     "--storage", str(tmp_path / "runs")])
    assert code == 0
    run = tmp_path / "runs" / "toy-toy"
    latest = max((path for path in run.glob("checkpoint_*") if path.is_dir()), key=lambda path: path.name)
    state = load_state(str(latest), kind="toy")
    assert state.epoch == 3 and state.step > 0 and set(state.model) == {"weight", "bias"}
    client = MlflowClient(tracking_uri(tmp_path / "runs"))
    (experiment,) = [e for e in client.search_experiments() if e.name == "jingle-toy"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    history = [metric.value for metric in sorted(client.get_metric_history(mlflow_run.info.run_id, "val_total"), key=lambda m: m.step)]
    assert len(history) == 3 and history[-1] < history[0]  # it learned something held out
