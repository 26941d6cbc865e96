"""The Ray evaluator pool on a real local cluster (loopback only, 2 CPUs)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import ray

from paretoprune.errors import InputError
from paretoprune.evaluators.ray_pool import EvaluatorPool, Outcome, _default_threads

pytestmark = pytest.mark.ray

# Actors unpickle the evaluator class; by value, so it needs no import path on the workers.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class PolynomialEvaluator:
    """A real computation of the payload, using a large table shared through the object store."""

    def __init__(self, table: np.ndarray, delay: float = 0.0) -> None:
        self.offset = float(table.sum())
        self.delay = delay

    def evaluate(self, payload: dict) -> dict[str, float]:
        x = np.asarray(payload["x"], dtype=float)
        if payload.get("fail"):
            raise ValueError(f"bad candidate {payload['x']}")
        time.sleep(payload.get("delay", self.delay))
        return {"sum": float(x.sum() + self.offset), "square": float((x**2).sum()),
                "threads": float(os.environ["OMP_NUM_THREADS"])}


@dataclass(frozen=True)
class Point:
    """A typed payload, as the search sends Candidate objects."""

    x: tuple[float, ...]


class PointEvaluator:
    def evaluate(self, payload: Point) -> dict[str, float]:
        return {"norm": float(np.linalg.norm(payload.x))}


def unfit_factory() -> PolynomialEvaluator:
    raise InputError("the model does not fit this worker; use a bigger GPU")


def broken_factory() -> PolynomialEvaluator:
    raise OSError("weights file truncated")


def expected(x: list[float], offset: float) -> dict[str, float]:
    values = np.asarray(x)
    return {"sum": float(values.sum() + offset), "square": float((values**2).sum())}


TABLE = np.ones(250_000)  # 2 MB: goes through the object store once, not with every actor
OFFSET = float(TABLE.sum())


def test_pool_starts_and_stops_its_own_local_cluster() -> None:
    if ray.is_initialized():
        pytest.skip("another test left Ray connected; this test needs to start its own cluster")
    with EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=1, threads_per_worker=1) as pool:
        assert ray.is_initialized()
        outcomes = pool.evaluate([{"x": [1.0, 2.0]}, {"x": [3.0]}])
        assert [o.objectives["sum"] for o in outcomes] == [OFFSET + 3.0, OFFSET + 3.0]
        assert outcomes[0].node_id == ray.get_runtime_context().get_node_id()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_results_come_in_completion_order_and_return_in_input_order(cluster) -> None:
    payloads = [{"x": [float(i), 1.0], "delay": 0.3 if i % 2 == 0 else 0.02} for i in range(8)]
    seen: list[Outcome] = []
    with EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=2, threads_per_worker=1) as pool:
        assert ray.is_initialized()
        outcomes = pool.evaluate(payloads, on_result=seen.append)
        pids = set(pool.actor_pids())

        def interrupt(outcome: Outcome) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):  # e.g. Ctrl-C while archiving a result
            pool.evaluate([{"x": [9.0], "delay": 0.3}] * 4, on_result=interrupt)
        again = pool.evaluate(payloads[1:4])  # results of the interrupted call do not leak in
        assert [o.objectives["sum"] for o in again] == [OFFSET + i + 1.0 for i in range(1, 4)]
    assert ray.is_initialized()  # the pool did not own the connection
    assert [o.index for o in outcomes] == list(range(8))
    for payload, outcome in zip(payloads, outcomes):
        assert outcome.status == "ok" and outcome.error is None
        assert {k: outcome.objectives[k] for k in ("sum", "square")} == expected(payload["x"], OFFSET)
        assert outcome.objectives["threads"] == 1.0
        assert outcome.seconds >= payload["delay"] and outcome.attempts == 1
    assert sorted(o.index for o in seen) == list(range(8))
    assert [o.index for o in seen] != list(range(8))  # slow and fast payloads interleave
    assert {o.pid for o in outcomes} == pids and len(pids) == 2


def test_an_evaluation_that_raises_is_failed_not_retried(cluster) -> None:
    payloads = [{"x": [1.0]}, {"x": [2.0], "fail": True}, {"x": [3.0]}]
    with EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=1, threads_per_worker=1) as pool:
        pids = pool.actor_pids()
        outcomes = pool.evaluate(payloads)
        assert pool.actor_pids() == pids  # the worker survived
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error == "ValueError: bad candidate [2.0]"
    assert outcomes[1].objectives is None and outcomes[1].attempts == 1
    with pytest.raises(RuntimeError, match="closed"):
        pool.evaluate(payloads)


def test_a_killed_worker_is_replaced_and_every_payload_completes_once(cluster) -> None:
    payloads = [{"x": [float(i)]} for i in range(8)]
    seen: list[int] = []
    killed: list[int] = []
    with EvaluatorPool(PolynomialEvaluator, (TABLE, 0.3), workers=2, threads_per_worker=1) as pool:

        def kill_the_other_worker(outcome: Outcome) -> None:
            seen.append(outcome.index)
            if not killed:  # the other worker is busy with its payload right now
                victim = next(pid for pid in pool.actor_pids() if pid != outcome.pid)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        outcomes = pool.evaluate(payloads, on_result=kill_the_other_worker)
        survivors = pool.actor_pids()
    assert sorted(seen) == list(range(8))
    assert all(o.status == "ok" for o in outcomes)
    assert [o.objectives["sum"] for o in outcomes] == [OFFSET + i for i in range(8)]
    assert any(o.attempts == 2 for o in outcomes)
    assert killed[0] not in survivors and len(survivors) == 2
    assert killed[0] not in {o.pid for o in outcomes if o.attempts == 2}


def test_typed_payloads_reach_the_evaluator_as_they_were_sent(cluster) -> None:
    with EvaluatorPool(PointEvaluator, workers=1, threads_per_worker=1) as pool:
        outcomes = pool.evaluate([Point((3.0, 4.0)), Point((6.0, 8.0))])
    assert [o.objectives for o in outcomes] == [{"norm": 5.0}, {"norm": 10.0}]
    assert all(isinstance(o, Outcome) and o.ok and o.attempts == 1 for o in outcomes)


def test_a_worker_that_cannot_start_is_reported(cluster) -> None:
    with pytest.raises(InputError, match="^the model does not fit this worker; use a bigger GPU$"):
        EvaluatorPool(unfit_factory, workers=1, threads_per_worker=1)
    with pytest.raises(RuntimeError, match="failed to start: OSError: weights file truncated$"):
        EvaluatorPool(broken_factory, workers=1, threads_per_worker=1)
    assert ray.is_initialized()


def test_default_threads_split_the_cores() -> None:
    one_box = [{"CPU": 16.0, "GPU": 4.0}]
    assert _default_threads(workers=4, gpus=1.0, nodes=one_box) == 4
    assert _default_threads(workers=2, gpus=2.0, nodes=one_box) == 8
    assert _default_threads(workers=4, gpus=0.0, nodes=[{"CPU": 8.0}, {"CPU": 8.0}]) == 4
    assert _default_threads(workers=1, gpus=0.0, nodes=[{"CPU": 8.0}, {"CPU": 8.0}]) == 8  # one node at most
    assert _default_threads(workers=3, gpus=0.0, nodes=[{"CPU": 2.0}]) == 1


def test_workers_get_the_cluster_cores_by_default(cluster) -> None:
    with EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=2) as pool:
        assert (pool.workers, pool.threads_per_worker, pool.gpus_per_worker) == (2, 1, 0.0)
        assert {o.objectives["threads"] for o in pool.evaluate([{"x": [1.0]}, {"x": [2.0]}])} == {1.0}


def test_bad_sizes_are_input_errors(cluster) -> None:
    with pytest.raises(InputError, match="workers"):
        EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=0)
    with pytest.raises(InputError, match="threads"):
        EvaluatorPool(PolynomialEvaluator, (TABLE,), workers=1, threads_per_worker=0)


_HOLD_A_CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""

_CONNECT = """
import ray
from paretoprune.evaluators.ray_pool import connect_ray
assert connect_ray(num_cpus=1)
print(ray.get_runtime_context().gcs_address, flush=True)
ray.shutdown()
"""


@pytest.fixture
def head_node() -> Iterator[tuple[dict[str, str], str]]:
    """A head node started in a process of its own, as ``ray start --head`` starts one: the
    environment to run a search in (without RAY_ADDRESS), and the head's address."""
    import subprocess

    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_A_CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout is not None
        address = holder.stdout.readline().strip()
        assert address, "the head node did not start"
        yield env, address
    finally:
        holder.communicate(input="", timeout=120)


def _connect(env: dict[str, str]) -> str:
    """The address of the cluster ``connect_ray`` reaches from a fresh process with ``env``."""
    import subprocess

    joined = subprocess.run([sys.executable, "-c", _CONNECT], capture_output=True, text=True, env=env, timeout=300)
    assert joined.returncode == 0, joined.stderr[-2000:]
    return joined.stdout.strip()


def test_a_search_without_an_address_starts_its_own_cluster_beside_a_running_one(head_node) -> None:
    """Ray joins the last cluster a head node started on the machine (``ray start``) when no
    address is given, and refuses ``num_cpus`` there; a search without ``--ray-address`` must get
    a cluster of its own beside it."""
    env, running = head_node
    own = _connect(env)
    assert own and own != running


def test_a_search_without_an_address_joins_the_cluster_ray_address_names(head_node) -> None:
    """RAY_ADDRESS is how Ray hands a cluster to a driver (``ray job submit`` sets it): a search
    without ``--ray-address`` joins that one."""
    env, running = head_node
    assert _connect(dict(env, RAY_ADDRESS=running)) == running
