"""A fault-tolerant pool of evaluator actors on Ray, with its own small scheduler.

One actor per device (a GPU, or a share of the CPU cores) builds the evaluator once, from a
factory and read-only inputs that travel through Ray's object store once, then scores
payloads one at a time. A payload is whatever the evaluator scores (the search sends
:class:`~paretoprune.candidate.Candidate` objects). The driver hands the pool a generation:

    with EvaluatorPool(RemoteEvaluator, (inputs,), workers=2) as pool:
        outcomes = pool.evaluate(candidates, on_result=archive_it)

The scheduler is a loop on ``ray.wait``: keep every actor busy, deliver each result as it
lands (so the driver can archive it at once), return them in input order. Two kinds of
failure are told apart:

* the evaluation raised (a bad candidate, an out-of-memory on it): recorded as failed with
  the error text, never retried;
* the actor died (killed, node lost, segfault): a fresh actor replaces it and the candidate
  goes back to the queue, up to ``max_attempts`` times, after which it is recorded failed.

Every payload yields exactly one Outcome.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, Mapping, Protocol, Sequence, TypeVar

import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayError, WorkerCrashedError

from paretoprune.errors import InputError

__all__ = ["Evaluator", "EvaluatorHost", "EvaluatorPool", "Outcome", "Reply", "connect_ray"]

logger = logging.getLogger(__name__)

# Errors meaning "the process running the evaluation is gone", not "the evaluation failed".
_WORKER_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


Payload = TypeVar("Payload")
Payload_contra = TypeVar("Payload_contra", contravariant=True)


class Evaluator(Protocol[Payload_contra]):
    """What the factory builds inside each actor."""

    def evaluate(self, payload: Payload_contra) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Reply:
    """What an actor sends back for one payload: objectives, or the error text."""

    objectives: dict[str, float] | None
    error: str | None
    seconds: float
    pid: int | None
    node_id: str


@dataclass(frozen=True)
class Outcome:
    """The result of one payload: objectives when ``status == "ok"``, else the error text."""

    index: int  # the payload's place in the list given to ``evaluate``
    status: Literal["ok", "failed"]
    objectives: dict[str, float] | None
    error: str | None
    worker: str
    node_id: str
    seconds: float
    pid: int | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------
# Inside the actor
# ---------------------------------------------------------------------------------------------


def _limit_threads(threads: int) -> None:
    """Cap math-library threads: environment first (read at import), torch if already loaded."""
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class EvaluatorHost:
    """The object each Ray actor holds: one evaluator, built once, scoring one payload at a time."""

    def __init__(self, factory: Callable[..., Evaluator], threads: int, *factory_args: Any) -> None:
        _limit_threads(threads)
        self._pid = os.getpid()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._evaluator: Evaluator | None = None
        # The user's error (the model does not fit, a bad path) travels back intact, so that
        # the driver can report it as such; anything else kills the actor with its traceback.
        self._startup_error: InputError | None = None
        try:
            self._evaluator = factory(*factory_args)
        except InputError as error:
            self._startup_error = error
        _limit_threads(threads)  # the factory may have imported torch

    def identity(self) -> tuple[int, str, InputError | None]:
        return self._pid, self._node_id, self._startup_error

    def evaluate(self, payload: Any) -> Reply:
        """Score one payload; an exception becomes an error text, so the actor stays alive."""
        start = time.perf_counter()
        objectives, error = None, None
        try:
            if self._evaluator is None:
                raise self._startup_error or RuntimeError("the evaluator was not built")
            objectives = {str(k): float(v) for k, v in self._evaluator.evaluate(payload).items()}
        except Exception as exc:  # a failing candidate must not take the worker down
            logger.warning("evaluation failed:\n%s", traceback.format_exc())
            error = f"{type(exc).__name__}: {exc}"
        return Reply(objectives, error, time.perf_counter() - start, self._pid, self._node_id)

    def peak_memory(self) -> int | None:
        """The evaluator's peak memory in bytes, when it can tell (``peak_memory()``), else None."""
        peak = getattr(self._evaluator, "peak_memory", None)
        return int(peak()) if callable(peak) else None


# ---------------------------------------------------------------------------------------------
# Connecting and sizing
# ---------------------------------------------------------------------------------------------


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join ``address``, else the cluster RAY_ADDRESS names, else start a local loopback-only
    cluster of ``num_cpus``; True when this call connected.

    RAY_ADDRESS is how Ray hands a cluster to a driver (``ray job submit`` sets it). Without it,
    Ray itself would join the last head node started on this machine (``ray start``, another
    tool's cluster) and refuse ``num_cpus`` there: a search without an address starts its own.
    Reuses an existing connection (returns False: the caller must not shut it down).
    """
    if ray.is_initialized():
        return False
    # Ray must bind to loopback only on machines like these; this makes it use 127.0.0.1.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    return True


def _resolve_gpus(gpus_per_worker: float | None, cluster_gpus: float) -> float:
    if gpus_per_worker is None:
        return 1.0 if cluster_gpus >= 1 else 0.0
    if gpus_per_worker < 0:
        raise InputError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    return float(gpus_per_worker)


def _resolve_workers(workers: int | None, gpus: float, cluster_gpus: float) -> int:
    if workers is None:
        return max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    return int(workers)


def _default_threads(workers: int, gpus: float, nodes: Sequence[Mapping[str, float]]) -> int:
    """CPU threads per actor when the user gives none.

    GPU actors share their node's cores with the node's other GPU actors; CPU actors split the
    cluster's cores, but no actor can use more cores than the biggest node has.
    """
    if gpus > 0:
        shares = [r.get("CPU", 0.0) // max(1.0, r["GPU"] // gpus) for r in nodes if r.get("GPU", 0.0) >= gpus]
        return max(1, int(min(shares))) if shares else 1
    total = sum(r.get("CPU", 0.0) for r in nodes)
    biggest = max((r.get("CPU", 0.0) for r in nodes), default=1.0)
    return max(1, int(min(total // workers, biggest)))


def _resolve_threads(threads: int | None, workers: int, gpus: float) -> int:
    if threads is None:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        return _default_threads(workers, gpus, nodes)
    if threads < 1:
        raise InputError(f"threads per worker must be at least 1, got {threads}")
    return int(threads)


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One worker position; its actor is replaced when it dies."""

    number: int
    actor: Any
    pid: int | None = None
    node_id: str = ""
    busy: bool = False

    @property
    def worker(self) -> str:
        return f"worker-{self.number}:{self.pid}"


@dataclass(frozen=True)
class _Task:
    slot: int
    index: int
    batch: int
    started: float


@dataclass
class _Batch(Generic[Payload]):
    """Bookkeeping of one ``evaluate`` call."""

    number: int
    payloads: Sequence[Payload]
    queue: deque[int] = field(init=False)
    attempts: list[int] = field(init=False)
    outcomes: list[Outcome | None] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = deque(range(len(self.payloads)))
        self.attempts = [0] * len(self.payloads)
        self.outcomes = [None] * len(self.payloads)

    @property
    def done(self) -> bool:
        return all(outcome is not None for outcome in self.outcomes)


class EvaluatorPool(Generic[Payload]):
    """Evaluator actors on a Ray cluster, and a scheduler that survives their deaths.

    ``factory(*factory_args)`` runs inside each actor; each of ``factory_args`` is put in the
    object store once and shared by all actors (and their replacements).
    ``gpus_per_worker=None`` means one GPU per actor where the cluster has GPUs, else CPU
    actors; ``workers=None`` means one actor per GPU, or one CPU actor;
    ``threads_per_worker=None`` splits the cluster's CPUs between the actors.
    """

    def __init__(
        self,
        factory: Callable[..., Evaluator[Payload]],
        factory_args: Sequence[Any] = (),
        *,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        gpus_per_worker: float | None = None,
        ray_address: str | None = None,
        max_attempts: int = 3,
        start_timeout_s: float | None = 1800.0,
    ) -> None:
        self._owns_ray = connect_ray(ray_address, num_cpus=self._local_cpus(workers, threads_per_worker))
        try:
            # A joined cluster may still be scaling up: only a local one is checked for GPUs.
            self._check_gpus = ray_address is None
            self._setup(factory, factory_args, workers, threads_per_worker, gpus_per_worker, max_attempts)
            self._wait_until_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _local_cpus(workers: int | None, threads: int | None) -> int:
        """A local cluster gets every core, or more if the user asked for more threads."""
        return max(os.cpu_count() or 1, (workers or 1) * (threads or 1))

    def _setup(self, factory: Callable[..., Evaluator[Payload]], factory_args: Sequence[Any], workers: int | None,
               threads: int | None, gpus: float | None, max_attempts: int) -> None:
        self._slots: list[_Slot] = []
        self._in_flight: dict[Any, _Task] = {}
        self._batches = 0
        cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
        self.gpus_per_worker = _resolve_gpus(gpus, cluster_gpus)
        if self.gpus_per_worker > cluster_gpus and self._check_gpus:
            raise InputError(f"each worker needs {self.gpus_per_worker} GPUs but this machine has {cluster_gpus:g}; "
                             "lower --gpus-per-worker")
        self.workers = _resolve_workers(workers, self.gpus_per_worker, cluster_gpus)
        self.threads_per_worker = _resolve_threads(threads, self.workers, self.gpus_per_worker)
        self.max_attempts = max(1, int(max_attempts))
        self._factory = factory
        self._arg_refs = tuple(ray.put(arg) for arg in factory_args)
        self._actor_class = ray.remote(EvaluatorHost).options(
            num_cpus=self.threads_per_worker, num_gpus=self.gpus_per_worker, max_restarts=0)
        self._slots = [_Slot(number, self._new_actor()) for number in range(self.workers)]

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._factory, self.threads_per_worker, *self._arg_refs)

    def _wait_until_ready(self, timeout: float | None) -> None:
        """Block until every actor has built its evaluator, so start-up errors surface here."""
        refs = [slot.actor.identity.remote() for slot in self._slots]
        try:
            identities = ray.get(refs, timeout=timeout)
        except GetTimeoutError:
            raise RuntimeError(f"the {self.workers} evaluator workers did not start within {timeout:g} s; "
                               "the cluster may lack the CPUs/GPUs they ask for") from None
        except RayActorError as error:
            logger.error("an evaluator worker failed to start:\n%s", error)
            raise RuntimeError(f"an evaluator worker failed to start: {_last_line(error)}") from None
        for slot, (pid, node_id, startup_error) in zip(self._slots, identities):
            if startup_error is not None:
                raise startup_error
            slot.pid, slot.node_id = pid, node_id
        logger.info("%d evaluator workers ready (%g GPU, %d threads each)", self.workers, self.gpus_per_worker,
                    self.threads_per_worker)

    # -- public ------------------------------------------------------------------------------

    def actor_pids(self) -> list[int]:
        """Process ids of the live actors whose id is known (a replacement reports it with its first result)."""
        return [slot.pid for slot in self._slots if slot.pid is not None]

    def peak_memory(self, timeout: float = 60.0) -> list[int]:
        """Each live actor's peak memory in bytes, as its evaluator reports it (those that cannot
        tell, or do not answer within ``timeout``, are left out)."""
        refs = [slot.actor.peak_memory.remote() for slot in self._slots]
        try:
            answers = ray.get(refs, timeout=timeout)
        except (RayError, GetTimeoutError) as error:
            logger.info("peak memory not reported: %s", _first_line(error))
            return []
        return [int(answer) for answer in answers if answer is not None]

    def evaluate(
        self,
        payloads: Sequence[Payload],
        on_result: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Evaluate every payload once; ``on_result`` sees each Outcome as it completes.

        Returns the outcomes in input order. If ``on_result`` raises (or Ctrl-C arrives), the
        exception propagates; evaluations still running are left to finish and are ignored.
        """
        if not self._slots:
            raise RuntimeError("the evaluator pool is closed")
        self._batches += 1
        batch = _Batch(self._batches, payloads)
        while not batch.done:
            self._dispatch(batch)
            ready, _ = ray.wait(list(self._in_flight), num_returns=1)
            for ref in ready:
                self._collect(ref, batch, on_result)
        return [outcome for outcome in batch.outcomes if outcome is not None]

    def close(self) -> None:
        """Stop the actors; disconnect from Ray if this pool connected."""
        for slot in getattr(self, "_slots", []):
            _kill_quietly(slot.actor)
        self._slots, self._in_flight = [], {}
        if getattr(self, "_owns_ray", False) and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> EvaluatorPool[Payload]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- scheduling --------------------------------------------------------------------------

    def _dispatch(self, batch: _Batch[Payload]) -> None:
        """Give queued payloads to idle actors."""
        for slot in self._slots:
            if not batch.queue:
                return
            if slot.busy:
                continue
            index = batch.queue.popleft()
            batch.attempts[index] += 1
            ref = slot.actor.evaluate.remote(batch.payloads[index])
            self._in_flight[ref] = _Task(slot.number, index, batch.number, time.perf_counter())
            slot.busy = True

    def _collect(self, ref: Any, batch: _Batch[Payload], on_result: Callable[[Outcome], None] | None) -> None:
        task = self._in_flight.pop(ref)
        slot = self._slots[task.slot]
        try:
            reply = ray.get(ref)
        except _WORKER_LOST as error:
            self._replace(slot, error)
            if task.batch == batch.number:
                self._retry_or_fail(task, batch, error, on_result)
            return
        except RayError as error:  # e.g. the payload could not be deserialised: not retried
            reply = Reply(None, f"{type(error).__name__}: {error}", time.perf_counter() - task.started, slot.pid,
                          slot.node_id)
        slot.busy = False
        slot.pid, slot.node_id = reply.pid, reply.node_id
        if task.batch == batch.number:
            self._finish(batch, _outcome(task.index, reply, slot.worker, batch.attempts[task.index]), on_result)

    def _retry_or_fail(self, task: _Task, batch: _Batch[Payload], error: Exception,
                       on_result: Callable[[Outcome], None] | None) -> None:
        attempts = batch.attempts[task.index]
        if attempts < self.max_attempts:
            logger.warning("worker lost during payload %d (attempt %d of %d); retrying", task.index, attempts,
                           self.max_attempts)
            batch.queue.appendleft(task.index)
            return
        text = f"evaluator worker died {attempts} times on this candidate; last: {_first_line(error)}"
        outcome = Outcome(task.index, "failed", None, text, f"worker-{task.slot}", "",
                          time.perf_counter() - task.started, None, attempts)
        self._finish(batch, outcome, on_result)

    def _replace(self, slot: _Slot, error: Exception) -> None:
        logger.warning("evaluator %s lost (%s); starting a replacement", slot.worker, _first_line(error))
        _kill_quietly(slot.actor)
        slot.actor, slot.pid, slot.node_id, slot.busy = self._new_actor(), None, "", False

    @staticmethod
    def _finish(batch: _Batch[Payload], outcome: Outcome, on_result: Callable[[Outcome], None] | None) -> None:
        batch.outcomes[outcome.index] = outcome
        if on_result is not None:
            on_result(outcome)


def _outcome(index: int, reply: Reply, worker: str, attempts: int) -> Outcome:
    return Outcome(index=index, status="failed" if reply.error is not None else "ok", objectives=reply.objectives,
                   error=reply.error, worker=worker, node_id=reply.node_id, seconds=float(reply.seconds),
                   pid=reply.pid, attempts=attempts)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _last_line(error: BaseException) -> str:
    """The line of a remote traceback that names the exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _kill_quietly(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead, or Ray already shut down
        pass
