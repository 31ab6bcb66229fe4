"""Small seeded inputs for testing plug-ins: round contexts, attack contexts, update matrices, images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fedpoison.attacks.base import AttackContext
from fedpoison.core.slices import ParamSlice
from fedpoison.defenses.base import RoundContext


def fixed_root_update(d: int, seed: int = 99) -> Callable[[Tensor], Tensor]:
    """A server root update (for rules that need the server's data) returning the same seeded row."""
    root = torch.randn(d, generator=torch.Generator().manual_seed(seed))

    def root_update(global_params: Tensor) -> Tensor:
        return root.clone()

    return root_update


def make_round_context(
    n: int,
    d: int,
    *,
    seed: int = 7,
    ids: Tensor | None = None,
    root: Callable[[Tensor], Tensor] | str | None = "random",
    slices: tuple[ParamSlice, ...] | None = None,
    rnd: int = 0,
) -> RoundContext:
    """A server's round context for ``n`` rows of length ``d``.

    Client ids are ``0..n-1`` unless given, the generator is seeded by
    ``seed``, the global model is zero, the layout is two halves (``w`` and
    ``b``), and ``root="random"`` gives a fixed seeded root update.
    """
    if slices is None:
        half = d // 2
        slices = (ParamSlice("w", 0, half, (half,)), ParamSlice("b", half, d, (d - half,)))
    root_fn = fixed_root_update(d) if root == "random" else root
    return RoundContext(
        rnd,
        torch.arange(n) if ids is None else ids,
        torch.Generator().manual_seed(seed),
        torch.zeros(d),
        slices,
        root_fn,
    )


def make_updates(n: int = 11, d: int = 40, *, seed: int = 0, spread: float = 0.3) -> tuple[Tensor, Tensor]:
    """``(n, d)`` rows scattered around a common seeded centre, and ``(n,)`` sample counts in [5, 50)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=g)
    x = centre + spread * torch.randn(n, d, generator=g)
    w = torch.randint(5, 50, (n,), generator=g).to(torch.float32)
    return x, w


def make_attack_context(
    *,
    m: int = 3,
    k: int = 7,
    d: int = 12,
    seed: int = 0,
    honest: bool = True,
    server_lr: float = 1.0,
    round: int = 0,
    generator_seed: int = 123,
    previous: bool = False,
    defense: Any = None,
) -> AttackContext:
    """An attack context with seeded own and honest rows around a common mean.

    ``honest=False`` hides the honest rows, as the ``local`` threat model does.
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=g)
    own = centre + 0.3 * torch.randn(m, d, generator=g)
    hon = centre + 0.3 * torch.randn(k, d, generator=g)
    return AttackContext(
        round=round,
        own_updates=own,
        own_weights=torch.full((m,), 50.0),
        honest_updates=hon if honest else None,
        honest_weights=torch.full((k,), 50.0) if honest else None,
        num_participants=m + k,
        global_params=torch.randn(d, generator=g),
        server_lr=server_lr,
        generator=torch.Generator().manual_seed(generator_seed),
        defense=defense,
        defense_ctx=None,
        previous_updates=torch.randn(m, d, generator=g) if previous else None,
    )


def make_images(
    n: int = 40, *, shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` seeded random images in [0, 1) of ``shape`` and labels ``0, 1, ..., num_classes - 1, 0, ...``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.arange(n) % num_classes


def make_malicious_training(
    attack: Any,
    x: Tensor,
    y: Tensor,
    *,
    model: Any,
    plan: Any = None,
    round: int = 1,
    client_id: int = 0,
    slot: int = 0,
    global_params: Tensor | None = None,
    previous_params: Tensor | None = None,
    seed: int = 0,
) -> Any:
    """A :class:`~fedpoison.attacks.base.MaliciousTraining` for one client, trained as the round loop trains it.

    ``x, y`` are the client's clean samples (``attack.poison`` makes its
    poisoned ones); ``model`` is a built model whose parameters are the global
    model unless ``global_params`` is given; ``plan`` a
    :class:`~fedpoison.training.local.LocalPlan` (default: 1 epoch, batch 16,
    lr 0.05). The ``train`` tool is :class:`~fedpoison.training.local.SequentialEngine`'s,
    with the generator ``(seed, round, client_id)`` fixed across calls.
    """
    import copy

    from fedpoison.attacks.base import MaliciousTraining
    from fedpoison.models.paramspec import ParamSpec
    from fedpoison.training.local import ClientJob, LocalPlan, SequentialEngine, StepHooks

    spec = ParamSpec.of(model)
    start = spec.flatten(model) if global_params is None else global_params.clone()
    plan = plan if plan is not None else LocalPlan(1, None, 16, 0.05)
    engine = SequentialEngine(copy.deepcopy(model), spec, plan)
    px, py = attack.poison(x, y, client_id=client_id, slot=slot,
                           generator=torch.Generator().manual_seed(seed + 1))

    def train(xs: Tensor, ys: Tensor, hooks: StepHooks | None) -> tuple[Tensor, float]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + round * 1_009 + client_id)
        return engine.train_one(start, ClientJob(client_id, xs, ys, torch.arange(len(ys)), g), hooks)

    return MaliciousTraining(
        round=round, client_id=client_id, slot=slot, clean_x=x, clean_y=y, x=px, y=py, global_params=start.clone(),
        previous_params=previous_params, train=train, model=copy.deepcopy(model), spec=spec,
        generator=torch.Generator().manual_seed(seed + 2), plan=plan,
    )
