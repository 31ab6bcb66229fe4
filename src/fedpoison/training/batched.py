"""Batched client engine: many clients train in lockstep as one computation.

The per-client parameters are stacked into one ``(m, d)`` matrix and every SGD
step of every client is one forward pass ``vmap(functional_call)`` over the
stacked parameters, the recipe of PyTorch's *model ensembling* tutorial, and one
backward pass of ordinary autograd (see :class:`_VmapLane`). Each client keeps

* its own batches: the positions come from :func:`~fedpoison.training.local.batch_schedule`
  with the client's own generator, drawn exactly as :class:`SequentialEngine` draws them;
* its own optimizer state: a momentum buffer per row, with the semantics of
  :class:`torch.optim.SGD` (weight decay added to the gradient, the buffer starts
  at the first step's gradient, dampening 0, no Nesterov);
* its own number of steps.

Unequal client sizes
--------------------
Clients are sorted by their number of steps (longest first), so the clients
still training at step ``t`` are always a prefix of the rows and a finished
client costs nothing. Within one step, batches of unequal length (the partial
last batch of an epoch, or clients of different sizes) are padded to the longest
one and the padding is masked out of the loss, so each client's loss is the mean
over its real samples only, as in the sequential engine. With equal sizes (IID
partitions) no step is padded.

FedSGD
------
FedSGD (``local.steps: 1``, batch at least the client size) is a single
batched pass: one vmapped forward over every client's samples and one backward,
giving each client's gradient of the shared global model.

Lanes
-----
On a CPU with several cores the clients are also dealt to lanes, one thread
each with one intra-op thread (see :class:`BatchedEngine`).

Agreement
---------
The two engines compute the same function; they differ only by floating-point
summation order inside the kernels, so they agree to ``torch.testing.assert_close``
tolerances, not bit for bit. Each engine on its own is deterministic.

References
----------
.. [1] PyTorch tutorial "Model ensembling" (``torch.func.stack_module_state``, ``vmap``).
.. [2] M. Fang, X. Cao, J. Jia and N. Gong, "Local Model Poisoning Attacks to
   Byzantine-Robust Federated Learning", USENIX Security 2020 (FedSGD setting).
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedpoison.models.paramspec import ParamSpec
from fedpoison.training.local import ClientJob, LocalPlan, SequentialEngine, batch_schedule, sgd_step_

__all__ = [
    "DEFAULT_CHUNK",
    "BatchedEngine",
    "assign_lanes",
    "choose_engine",
    "client_loss",
    "default_workers",
    "sgd_step_",
    "stack_batches",
]


# ---- pure pieces -----------------------------------------------------------------
def stack_batches(
    sources: Sequence[tuple[Tensor, Tensor]],
    source_of: Sequence[int],
    batches: Sequence[Tensor],
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gather one step's batches of ``k`` clients into ``(k, B, ...)`` tensors.

    Parameters
    ----------
    sources:
        The distinct ``(x, y)`` tensor pairs the clients index into.
    source_of:
        For each of the ``k`` clients, its position in ``sources``.
    batches:
        For each client, the indices (into its source) of this step's batch.

    Returns
    -------
    ``(x, y, mask)``: inputs ``(k, B, ...)`` and labels ``(k, B)`` with ``B`` the
    longest batch; ``mask`` is ``None`` when every batch has length ``B``, else a
    float ``(k, B)`` tensor, 1 for real samples and 0 for padding (padding repeats
    index 0 of the source, a valid sample whose loss is masked out).
    """
    lengths = [int(b.numel()) for b in batches]
    width = max(lengths)
    if min(lengths) == width:
        idx = torch.stack(list(batches))
        mask = None
    else:
        idx = torch.nn.utils.rnn.pad_sequence(list(batches), batch_first=True, padding_value=0)
        lens = torch.tensor(lengths, device=idx.device)
        mask = (torch.arange(width, device=idx.device)[None, :] < lens[:, None]).float()
    if len(sources) == 1:
        x, y = sources[0]
        return x[idx], y[idx], mask
    x0, y0 = sources[source_of[0]]
    xb = torch.empty((len(batches), width, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)
    yb = torch.empty((len(batches), width), dtype=y0.dtype, device=y0.device)
    owner = torch.tensor(source_of, device=idx.device)
    for s, (x, y) in enumerate(sources):
        rows = (owner == s).nonzero().flatten()
        if rows.numel():
            xb[rows] = x[idx[rows]]
            yb[rows] = y[idx[rows]]
    return xb, yb, mask


@dataclass(frozen=True)
class _Schedule:
    """One client's batches for the round (indices into its source)."""

    batches: tuple[Tensor, ...]

    @property
    def steps(self) -> int:
        return len(self.batches)


def _client_schedule(job: ClientJob, plan: LocalPlan) -> _Schedule:
    """The client's batches, drawn from its generator exactly as the sequential engine draws them."""
    positions = batch_schedule(job.size, plan, job.generator)
    if not positions:
        return _Schedule(())
    flat = job.index[torch.cat(positions).to(job.index.device)]
    return _Schedule(tuple(torch.split(flat, [len(p) for p in positions])))


# ---- lanes: one worker thread each ---------------------------------------------------------
def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(mod, nn.modules.conv._ConvNd) for mod in model.modules())


def default_workers(device: torch.device | str) -> int:
    """Lanes to run on ``device``: the usable CPU cores (at most torch's thread count), 1 on a GPU."""
    if torch.device(device).type != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
    return max(1, min(cores, threads))


def assign_lanes(costs: Sequence[float], lanes: int) -> list[list[int]]:
    """Deal items to ``lanes`` by greedy longest-processing-time: biggest first, to the least-loaded lane.

    Deterministic (ties go to the lower lane, then the lower item), so a client is
    always trained by the same lane for the same round and the results never
    depend on thread timing.

    >>> assign_lanes([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    load = [0.0] * lanes
    out: list[list[int]] = [[] for _ in range(lanes)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lane = min(range(lanes), key=lambda k: (load[k], k))
        out[lane].append(i)
        load[lane] += costs[i]
    return [sorted(rows) for rows in out]


def client_loss(logits: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """One client's mean cross-entropy over its real samples.

    ``-log_softmax(logits)[y]`` averaged (over ``mask`` when given): the same
    quantity as ``F.cross_entropy``, written with ``gather`` because under
    ``vmap`` ``cross_entropy`` goes through a decomposition whose first call
    imports sympy (two seconds per process).
    """
    picked = -logits.log_softmax(-1).gather(-1, y[..., None])[..., 0]
    if mask is None:
        return picked.mean()
    return (picked * mask).sum() / mask.sum()


class _VmapLane:
    """Trains chunks of clients in lockstep with vmap; owns its model copy (functional_call is not thread-safe).

    The forward pass is ``vmap(functional_call)`` over the stacked parameters;
    the backward pass is ordinary autograd from the sum of the clients' losses
    to one leaf per parameter (a view into the ``(k, d)`` rows). Client ``i``'s
    rows enter only client ``i``'s loss, so the gradient of the sum is each
    client's own gradient. (``torch.func.grad`` would do the same, but its first
    call imports ``torch._dynamo``: two to five seconds per process.)
    """

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan, max_clients: int | None) -> None:
        self.model = model
        self.spec = spec
        self.plan = plan
        self.max_clients = max_clients
        self._names = [s.name for s in spec.slices]
        self._losses: dict[bool, Callable[..., Tensor]] = {
            False: vmap(self._loss, in_dims=(0, 0, 0)),
            True: vmap(self._masked_loss, in_dims=(0, 0, 0, 0)),
        }

    # one client's loss, written once; vmap lifts it to all clients
    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return client_loss(functional_call(self.model, params, (x,)), y)

    def _masked_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        return client_loss(functional_call(self.model, params, (x,)), y, mask)

    def train_rows(self, global_params: Tensor, jobs: list[ClientJob], rows: list[int],
                   updates: Tensor, losses: Tensor) -> None:
        """Train ``jobs[rows]`` and write their rows of ``updates`` and ``losses``."""
        schedules = {i: _client_schedule(jobs[i], self.plan) for i in rows}
        # longest first: the clients still training at step t are a prefix of the rows
        order = sorted(rows, key=lambda i: (-schedules[i].steps, i))
        chunk = self.max_clients or len(order)
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            u, lo = self._train_chunk(global_params, [jobs[i] for i in part], [schedules[i] for i in part])
            where = torch.tensor(part)
            updates.index_copy_(0, where.to(updates.device), u)
            losses[where] = lo

    @torch.no_grad()
    def _train_chunk(self, global_params: Tensor, jobs: list[ClientJob], scheds: list[_Schedule]) -> tuple[Tensor, Tensor]:
        """Train clients sorted by decreasing step count, all in lockstep."""
        plan, k = self.plan, len(jobs)
        sources: list[tuple[Tensor, Tensor]] = []
        source_of: list[int] = []
        seen: dict[tuple[int, int], int] = {}
        for job in jobs:
            key = (id(job.x), id(job.y))
            if key not in seen:
                seen[key] = len(sources)
                sources.append((job.x, job.y))
            source_of.append(seen[key])
        steps = [s.steps for s in scheds]
        params = global_params.detach().expand(k, -1).clone()
        loss_sum = torch.zeros(k, device=global_params.device)
        bufs: list[Tensor] | None = None  # momentum buffers, one (k, *shape) tensor per parameter
        for t in range(steps[0] if steps else 0):
            a = sum(1 for s in steps if s > t)  # active clients: a prefix
            xb, yb, mask = stack_batches(sources, source_of[:a], [s.batches[t] for s in scheds[:a]])
            args = (xb, yb) if mask is None else (xb, yb, mask)
            views = self.spec.unflatten(params[:a])
            leaves = {name: v.detach().requires_grad_() for name, v in views.items()}
            with torch.enable_grad():
                loss = self._losses[mask is not None](leaves, *args)
                grads = torch.autograd.grad(loss.sum(), [leaves[name] for name in self._names])
            # SGD per parameter on views into the (k, d) rows: no flat copy of the gradients
            new_bufs = []
            for j, name in enumerate(self._names):
                b = sgd_step_(views[name], grads[j], None if bufs is None else bufs[j][:a],
                              lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay)
                if b is not None:
                    new_bufs.append(b)
            if bufs is None and new_bufs:
                bufs = new_bufs
            loss_sum[:a] += loss.detach()
        counts = torch.tensor([max(s, 1) for s in steps], dtype=loss_sum.dtype, device=loss_sum.device)
        return params.sub_(global_params), (loss_sum / counts).cpu()


class _LoopLane:
    """Trains its clients one by one with the sequential engine's own code, on its own model copy."""

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan) -> None:
        self.engine = SequentialEngine(model, spec, plan)

    def train_rows(self, global_params: Tensor, jobs: list[ClientJob], rows: list[int],
                   updates: Tensor, losses: Tensor) -> None:
        for i in rows:
            updates[i], losses[i] = self.engine.train_one(global_params, jobs[i])


#: Default vmap chunk: big enough to amortise per-step overhead (W2's 100 clients
#: per round fit in one chunk per lane), small enough that a 1,000-client round
#: does not hold three more ``k x d`` matrices (parameters, momentum, gradients).
DEFAULT_CHUNK = 128
#: Held while lanes run with torch's (process-wide) thread count lowered to one, and while the
#: thread count is read to choose lanes and engines, so that runs in concurrent threads never see
#: another run's temporary setting (and so choose exactly what they would choose alone).
_THREADS_LOCK = threading.RLock()


# ---- the engine --------------------------------------------------------------------
class BatchedEngine:
    """Train many clients at once: vectorised with ``vmap`` and spread over lanes.

    Same contract as :class:`~fedpoison.training.local.SequentialEngine`:
    ``train(global_params, jobs) -> (updates (m, d), mean losses (m,))``, rows in
    the order of ``jobs``.

    Two levers, each measured (``benchmarks/RESULTS.md``, ``docs/performance.md``):

    * **vmap**: a lane trains its clients in lockstep as one computation over
      stacked parameters (see the module docstring). This wins wherever per-step
      overhead dominates: MLPs, small batches, many small clients, any model on a GPU.
    * **lanes**: on a CPU with several cores, the clients are dealt to ``workers``
      lanes, each a thread running one intra-op thread. Small convolutions use
      intra-op threads poorly, so two single-thread lanes beat one two-thread loop.
      For convolutional models on CPU, where vmap's grouped convolutions are
      slower than per-client kernels, each lane trains its clients one by one
      with the sequential engine's code (``vectorize=False``).

    Parameters
    ----------
    model:
        The architecture. It is copied once per lane; the copies' parameters are
        replaced on every call (``functional_call``), and ``model`` itself is
        never written. It must have no buffers that change in training (the
        zoo's models have none).
    spec:
        The flat layout of the model's parameters.
    plan:
        Local SGD settings.
    max_clients:
        Clients trained together in one vmap chunk (``None``: all of a lane's).
        Chunks bound memory: the stacked parameters, momentum buffers and
        gradients are ``max_clients x d`` each, and activations grow with
        ``max_clients * batch_size``. Default :data:`DEFAULT_CHUNK`.
    workers:
        Lanes (``None``: :func:`default_workers`, the usable cores on CPU, 1 on a GPU).
    vectorize:
        Use vmap within a lane (``None``: yes, except for convolutional models on CPU).
    """

    name = "batched"

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan, *,
                 max_clients: int | None = DEFAULT_CHUNK, workers: int | None = None,
                 vectorize: bool | None = None) -> None:
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients: expected a positive integer or None, got {max_clients}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers: expected a positive integer or None, got {workers}")
        device = next(model.parameters()).device
        self.model = model
        self.spec = spec
        self.plan = plan
        self.max_clients = max_clients
        self.workers = workers or default_workers(device)
        self.vectorize = vectorize if vectorize is not None else not (device.type == "cpu" and _has_conv(model))
        self._lanes: list[_VmapLane | _LoopLane] = []

    def _lane(self, k: int) -> _VmapLane | _LoopLane:
        while len(self._lanes) <= k:
            copy_ = copy.deepcopy(self.model)
            if self.vectorize:
                self._lanes.append(_VmapLane(copy_, self.spec, self.plan, self.max_clients))
            else:
                self._lanes.append(_LoopLane(copy_, self.spec, self.plan))
        return self._lanes[k]

    def train(self, global_params: Tensor, jobs: list[ClientJob]) -> tuple[Tensor, Tensor]:
        """Train ``jobs`` from ``global_params``; return the ``(m, d)`` updates and ``(m,)`` mean losses."""
        m, d = len(jobs), self.spec.dim
        updates = torch.zeros(m, d, device=global_params.device)
        losses = torch.zeros(m)
        if m == 0:
            return updates, losses
        lanes = [rows for rows in assign_lanes([self.plan.num_steps(j.size) * min(self.plan.batch_size, j.size)
                                                for j in jobs], min(self.workers, m)) if rows]
        if len(lanes) == 1:
            self._lane(0).train_rows(global_params, jobs, lanes[0], updates, losses)
            return updates, losses
        with _THREADS_LOCK:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one intra-op thread per lane (new threads inherit it)
            try:
                with ThreadPoolExecutor(len(lanes), thread_name_prefix="fedpoison-lane") as pool:
                    futures = [pool.submit(self._lane(k).train_rows, global_params, jobs, rows, updates, losses)
                               for k, rows in enumerate(lanes)]
                    for fut in futures:
                        fut.result()
            finally:
                torch.set_num_threads(threads)
        return updates, losses

    def train_one(self, global_params: Tensor, job: ClientJob) -> tuple[Tensor, float]:
        """Train one client; return ``(update, mean loss)`` (the sequential engine's signature)."""
        u, lo = self.train(global_params, [job])
        return u[0], float(lo[0])


# ---- engine selection ----------------------------------------------------------------
def choose_engine(model: nn.Module, spec: ParamSpec, plan: LocalPlan, device: torch.device | str) -> str:
    """The engine ``local.engine: auto`` uses: ``"sequential"`` or ``"batched"``.

    The rule, calibrated on the measurements in ``benchmarks/RESULTS.md`` (see
    ``docs/performance.md``):

    1. on a GPU, ``batched`` (vmap: one kernel launch per layer for all clients);
    2. on CPU, a model without convolutions (logistic regression, MLP):
       ``batched`` (vmap removes the per-client, per-step overhead that dominates
       small dense models);
    3. on CPU, a convolutional model: ``batched`` when there are at least two
       usable cores (:func:`default_workers`; the engine then trains one client
       per core, one intra-op thread each), else ``sequential`` (vmap's grouped
       convolutions are slower than per-client kernels on one core).

    It is a fixed rule, not a timed trial at run time: a choice that depended on
    the machine's load could pick different engines on two runs of one config,
    and the engines agree only to rounding, so reruns would no longer be
    byte-identical. ``spec`` and ``plan`` are accepted for rules that need them;
    the current one does not.
    """
    del spec, plan
    dev = torch.device(device)
    if dev.type != "cpu" or not _has_conv(model):
        return "batched"
    return "batched" if default_workers(dev) >= 2 else "sequential"
