"""Batched client engine: many clients train in lockstep as one computation.

The per-client parameters are stacked into one ``(m, d)`` matrix and every SGD
step of every client is one call of ``vmap(grad_and_value(loss))`` over
``torch.func.functional_call``, the recipe of PyTorch's *model ensembling*
tutorial. Each client keeps

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

First step and FedSGD
---------------------
At step 0 every client starts from the same global model, so the first step
passes the parameters unbatched (``in_dims=None``): the forward pass is one
dense computation over all clients' samples and only the gradients are per
client. FedSGD (``local.steps: 1``, batch at least the client size) is exactly
this single batched pass: per-client gradients of the shared global model.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from fedpoison.models.paramspec import ParamSpec
from fedpoison.training.local import ClientJob, LocalPlan, batch_schedule

__all__ = ["BatchedEngine", "choose_engine", "sgd_step_", "stack_batches"]


# ---- pure pieces -----------------------------------------------------------------
def sgd_step_(
    params: Tensor,
    grads: Tensor,
    buf: Tensor | None,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Tensor | None:
    """One :class:`torch.optim.SGD` step on the rows of ``params``, in place.

    .. math::

        g_t = \\nabla_t + \\lambda\\, p_{t-1},\\qquad
        b_t = \\begin{cases} g_t & t = 1\\\\ \\mu\\, b_{t-1} + g_t & t > 1\\end{cases},\\qquad
        p_t = p_{t-1} - \\eta\\, b_t

    with :math:`\\lambda` the weight decay, :math:`\\mu` the momentum (:math:`b_t = g_t`
    when :math:`\\mu = 0`) and :math:`\\eta` the learning rate: PyTorch's SGD with
    dampening 0 and ``nesterov=False``, applied row-wise.

    Parameters
    ----------
    params:
        ``(k, d)`` parameters, updated in place.
    grads:
        ``(k, d)`` gradients (may be overwritten).
    buf:
        ``(k, d)`` momentum buffers, updated in place, or ``None`` on the first
        step (a new buffer is returned when ``momentum`` is non-zero).

    Returns
    -------
    The momentum buffer to pass to the next step (``None`` without momentum).
    """
    g = grads
    if weight_decay != 0:
        g = g.add(params, alpha=weight_decay)
    if momentum != 0:
        if buf is None:
            buf = g.detach().clone()
        else:
            buf.mul_(momentum).add_(g)
        g = buf
    params.add_(g, alpha=-lr)
    return buf


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


# ---- the engine --------------------------------------------------------------------
class BatchedEngine:
    """Train many clients in lockstep with ``vmap`` over stacked parameters.

    Same contract as :class:`~fedpoison.training.local.SequentialEngine`:
    ``train(global_params, jobs) -> (updates (m, d), mean losses (m,))``, rows in
    the order of ``jobs``.

    Parameters
    ----------
    model:
        The architecture; its own parameters are never read or written (the
        stacked parameters are passed in with ``functional_call``). It must have
        no buffers that change in training (the zoo's models have none).
    spec:
        The flat layout of the model's parameters.
    plan:
        Local SGD settings.
    max_clients:
        Clients trained together in one chunk (``None``: all of them). Smaller
        chunks bound memory: activations grow with ``max_clients * batch_size``.
    """

    name = "batched"

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan, *, max_clients: int | None = None) -> None:
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients: expected a positive integer or None, got {max_clients}")
        self.model = model
        self.spec = spec
        self.plan = plan
        self.max_clients = max_clients
        mean = grad_and_value(self._mean_loss)
        masked = grad_and_value(self._masked_loss)
        self._shared_step: dict[bool, Callable[..., tuple[dict[str, Tensor], Tensor]]] = {
            False: vmap(mean, in_dims=(None, 0, 0)),
            True: vmap(masked, in_dims=(None, 0, 0, 0)),
        }
        self._stacked_step: dict[bool, Callable[..., tuple[dict[str, Tensor], Tensor]]] = {
            False: vmap(mean, in_dims=(0, 0, 0)),
            True: vmap(masked, in_dims=(0, 0, 0, 0)),
        }

    # one client's loss, written once; vmap lifts it to all clients
    def _mean_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.model, params, (x,)), y)

    def _masked_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        per_sample = F.cross_entropy(functional_call(self.model, params, (x,)), y, reduction="none")
        return (per_sample * mask).sum() / mask.sum()

    def _flat(self, grads: dict[str, Tensor], k: int) -> Tensor:
        return torch.cat([grads[s.name].reshape(k, -1) for s in self.spec.slices], dim=1)

    def train(self, global_params: Tensor, jobs: list[ClientJob]) -> tuple[Tensor, Tensor]:
        """Train ``jobs`` from ``global_params``; return the ``(m, d)`` updates and ``(m,)`` mean losses."""
        m, d = len(jobs), self.spec.dim
        updates = torch.zeros(m, d, device=global_params.device)
        losses = torch.zeros(m)
        if m == 0:
            return updates, losses
        schedules = [_client_schedule(job, self.plan) for job in jobs]
        # longest first: the clients still training at step t are a prefix of the rows
        order = sorted(range(m), key=lambda i: -schedules[i].steps)
        chunk = self.max_clients or m
        for start in range(0, m, chunk):
            rows = order[start : start + chunk]
            u, lo = self._train_chunk(global_params, [jobs[i] for i in rows], [schedules[i] for i in rows])
            where = torch.tensor(rows)
            updates[where.to(updates.device)] = u
            losses[where] = lo
        return updates, losses

    def train_one(self, global_params: Tensor, job: ClientJob) -> tuple[Tensor, float]:
        """Train one client; return ``(update, mean loss)`` (the sequential engine's signature)."""
        u, lo = self.train(global_params, [job])
        return u[0], float(lo[0])

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
        buf: Tensor | None = None
        for t in range(steps[0] if steps else 0):
            a = sum(1 for s in steps if s > t)  # active clients: a prefix
            xb, yb, mask = stack_batches(sources, source_of[:a], [s.batches[t] for s in scheds[:a]])
            args = (xb, yb) if mask is None else (xb, yb, mask)
            with torch.enable_grad():
                if t == 0:
                    grads, loss = self._shared_step[mask is not None](self.spec.unflatten(global_params), *args)
                else:
                    grads, loss = self._stacked_step[mask is not None](self.spec.unflatten(params[:a]), *args)
            g = self._flat(grads, a)
            if buf is None:
                buf = sgd_step_(params[:a], g, None, lr=plan.lr, momentum=plan.momentum,
                                weight_decay=plan.weight_decay)
            else:
                sgd_step_(params[:a], g, buf[:a], lr=plan.lr, momentum=plan.momentum,
                          weight_decay=plan.weight_decay)
            loss_sum[:a] += loss.detach()
        counts = torch.tensor([max(s, 1) for s in steps], dtype=loss_sum.dtype, device=loss_sum.device)
        return params - global_params, (loss_sum / counts).cpu()


# ---- engine selection ----------------------------------------------------------------
def choose_engine(model: nn.Module, spec: ParamSpec, plan: LocalPlan, device: torch.device | str) -> str:
    """The engine ``local.engine: auto`` uses: ``"sequential"`` or ``"batched"``.

    The rule is a fixed function of the model, the plan and the device, calibrated
    on the measurements in ``benchmarks/RESULTS.md`` (see ``docs/performance.md``).
    It deliberately does not time a trial at run time: a choice that depended on
    the machine's load could pick different engines on two runs of one config,
    and the engines agree only to rounding, which would break byte-identical reruns.
    """
    del spec
    dev = torch.device(device)
    has_conv = any(isinstance(mod, nn.modules.conv._ConvNd) for mod in model.modules())
    if dev.type == "cuda":
        return "batched"
    fedsgd = plan.steps == 1
    if fedsgd:
        return "batched"
    if has_conv:
        return "sequential"
    return "batched" if plan.batch_size <= 64 else "sequential"
