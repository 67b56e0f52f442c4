"""cluster.yaml (AWS) and cluster.local.yaml (machines you have): Ray's own validation, offline.

Ray's validator is private API (``ray.autoscaler._private.util``), so this pins it to the Ray
version the project installs: a Ray upgrade that changes the cluster-file schema fails here
before ``ray up`` does.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = ["cluster.yaml", "cluster.local.yaml"]
AUTOSCALING_CONFIG = "--autoscaling-config=~/ray_bootstrap_config.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def all_commands(config: dict) -> list[str]:
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"]
    return [command for key in keys for command in config.get(key) or []]


def project_install(config: dict) -> list[str]:
    return [c for c in config["setup_commands"] if "pip install" in c and "-e ~/jingle" in c]


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_ray_accepts_the_cluster_file(name):
    validate_config(prepare_config(load(name)))


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_setup_commands_install_the_project_with_pip(name):
    config = load(name)
    # Ray's defaults would otherwise install a Ray nightly instead of the project's pinned Ray
    assert project_install(config), f"{name}: no setup command runs `pip install -e ~/jingle`"
    assert config["file_mounts"]["~/jingle"] == ".", f"{name}: the repository is not copied to ~/jingle"
    assert ".gitignore" in config.get("rsync_filter", []), f"{name}: would copy .venv and outputs to every node"


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_every_command_is_whole(name):
    # an unquoted ` #` inside a YAML command ends it there: the quotes left open show it
    for command in all_commands(load(name)):
        shlex.split(command)


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_head_start_keeps_the_autoscaling_config(name):
    starts = [c for c in load(name)["head_start_ray_commands"] if "ray start --head" in c]
    assert len(starts) == 1 and AUTOSCALING_CONFIG in starts[0], starts


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_the_token_reaches_every_node(name):
    config = load(name)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in "head_start_ray_commands", "worker_start_ray_commands":
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), (key, starts)


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_storage_is_named_once(name):
    config = load(name)
    storage = config["metadata"]["storage"]
    assert storage

    def strings(value):
        if isinstance(value, dict):
            yield from (s for v in value.values() for s in strings(v))
        elif isinstance(value, list):
            yield from (s for v in value for s in strings(v))
        elif isinstance(value, str):
            yield value

    assert sum(storage in s for s in strings(config)) == 1


def test_both_files_install_the_project_the_same_way():
    assert project_install(load("cluster.yaml")) == project_install(load("cluster.local.yaml"))


def test_aws_node_types():
    config = load("cluster.yaml")
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert not types[head]["resources"].get("GPU"), "the head needs no GPU"
    workers = {name: spec for name, spec in types.items() if name != head}
    gpu = [name for name, spec in workers.items() if spec["resources"].get("GPU")]
    cpu = [name for name, spec in workers.items() if not spec["resources"].get("GPU") and spec["resources"].get("CPU")]
    assert gpu and cpu, f"want a GPU worker type and a CPU worker type, got {sorted(workers)}"
    # one GPU per node: one encoder actor or one DDP worker per node
    assert all(workers[name]["resources"]["GPU"] == 1 for name in gpu)
    for name, spec in workers.items():
        assert isinstance(spec.get("max_workers"), int) and spec["max_workers"] > 0, f"{name}: max_workers unset"
        assert 0 <= spec.get("min_workers", 0) <= spec["max_workers"], name
    assert config["idle_timeout_minutes"] > 0
    assert config["metadata"]["storage"].startswith("s3://")


def test_local_file_has_no_node_types():
    config = load("cluster.local.yaml")
    assert "available_node_types" not in config and "head_node_type" not in config
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and isinstance(config["provider"]["worker_ips"], list)
    assert config["auth"]["ssh_user"] and config["auth"]["ssh_private_key"]
    # Ray makes the one node type of every listed machine itself
    assert list(prepare_config(config)["available_node_types"]) == ["local.cluster.node"]
