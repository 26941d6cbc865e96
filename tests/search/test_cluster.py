"""Running on a cluster: the launcher configs and a real two-node search.

The two-node test starts a genuine multi-node Ray cluster on this machine (every node bound to
127.0.0.1), runs a search through the command line against it, as a user on a cluster would,
and checks in the archive that both nodes evaluated candidates. Where a model goes on a
worker's GPUs is tested beside its module, in tests/evaluators/test_placement.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from paretoprune.search.archive import Archive
from paretoprune.search.run import EVALUATIONS_FILE
from paretoprune.testing import save_tiny_model, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# ---------------------------------------------------------------------------------------------
# The cluster-launcher config and the KubeRay example
# ---------------------------------------------------------------------------------------------


def _launcher_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "ray_cluster.yaml").read_text())


def _prepared(config: dict) -> dict:
    """What `ray up` does to a config before it asks the cloud anything: defaults, then checks.

    The provider's own steps (resource detection and bootstrap, which call AWS) are left out.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_cluster_yaml_passes_rays_own_validation() -> None:
    prepared = _prepared(_launcher_config())
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "no evaluator should land on the driver's node"
    gpu_types = [t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, "a worker type with GPUs"
    assert all(0 <= t["min_workers"] < t["max_workers"] <= prepared["max_workers"] for t in gpu_types)
    setup = " ".join(prepared["worker_setup_commands"])
    assert "paretoprune" in setup and "torch" in setup and "ray[default]" in setup
    assert prepared["file_mounts"], "a local config folder is mounted"


def test_rays_validator_would_catch_a_broken_config() -> None:
    from jsonschema import ValidationError

    broken = _launcher_config()
    worker = next(t for t in broken["available_node_types"].values() if "GPU" in t["resources"])
    worker["resources"]["GPU"] = "eight"  # resources must be integers
    with pytest.raises(ValidationError):
        _prepared(broken)


def test_kuberay_example_is_a_gpu_raycluster() -> None:
    documents = list(yaml.safe_load_all((REPO_ROOT / "deploy" / "kuberay-raycluster.yaml").read_text()))
    cluster = next(doc for doc in documents if doc.get("kind") == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert container["image"]
    claims = {doc["metadata"]["name"] for doc in documents if doc.get("kind") == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for v in head["template"]["spec"]["volumes"]}
    assert used <= claims, "every volume the head mounts is defined in the file"


# ---------------------------------------------------------------------------------------------
# A real two-node cluster on loopback
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_nodes() -> Iterator[object]:
    """A head and a second node, one CPU each, so that two one-thread actors must spread."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        for key, value in LOOPBACK.items():
            patch.setenv(key, value)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        try:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            yield cluster
        finally:
            cluster.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, tiny_model("llama", layers=2))
    return folder


@pytest.mark.ray
def test_a_search_spreads_over_both_nodes_of_a_cluster(two_nodes, model_dir: Path, tmp_path: Path) -> None:
    nodes = two_nodes.list_all_nodes()
    assert len(nodes) == 2
    assert {node.node_ip_address for node in nodes} == {"127.0.0.1"}  # loopback only
    assert two_nodes.address.startswith("127.0.0.1:")

    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "paretoprune", "search", "--model", str(model_dir), "--calib", "builtin",
        "--nsamples", "2", "--seqlen", "32", "--mode", "layerwise", "--sparsity", "0.5",
        "--pop", "6", "--generations", "1", "--seed", "0",
        "--ray-address", two_nodes.address, "--workers", "2", "--threads-per-worker", "1",
        "--out", str(out), "--quiet", "--json",
    ]  # fmt: skip
    env = dict(os.environ, **LOOPBACK, TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    frame = Archive.load(out).frame()
    assert len(frame) == summary["evaluations"] == 6
    assert len(pd.read_parquet(out / EVALUATIONS_FILE)) == 6  # all in the one table a user opens
    assert (frame["status"] == "ok").all()
    assert set(frame["node_id"]) == {node.node_id for node in nodes}  # both nodes evaluated
    assert frame["worker"].nunique() == 2
