"""The round loop: sample, train, attack, audit, defend, step, evaluate, record.

One function per phase; :func:`run` strings them together. Every random draw
takes a generator derived from ``(seed, purpose, round[, client])`` (see
:mod:`fedpoison.seeding`), so a round's randomness is independent of the rounds
before it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from fedpoison.attacks import AttackContext, Knowledge, MaliciousTraining
from fedpoison.attacks.threat import attack_active, check_crafted, sees_honest_updates
from fedpoison.config import ExperimentConfig
from fedpoison.core.rows import row_norms
from fedpoison.defenses import RoundContext
from fedpoison.plugins import load_config
from fedpoison.seeding import generator
from fedpoison.simulation.federation import Federation, build_federation
from fedpoison.simulation.server import audit_and_defend, server_step
from fedpoison.training import ClientJob, SequentialEngine, StepHooks, clip_rows, evaluate

if TYPE_CHECKING:
    from fedpoison.simulation.result import RunResult


# ---- per-round phases ----------------------------------------------------------
def sample_clients(fed: Federation, rnd: int) -> Tensor:
    """Sorted ids of the clients sampled in round ``rnd``.

    Malicious clients, fake ones included, are sampled like everyone else
    unless ``attack.always_participate``, in which case they all take part and
    the remaining slots go to honest clients. The pool is the whole
    population: ``clients.num`` genuine plus ``attack.fake_clients`` fake clients.
    """
    cfg = fed.cfg
    k, n = cfg.participants_per_round, fed.population
    g = generator(cfg.seed, "sampling", rnd)
    if cfg.attack.always_participate and len(fed.malicious):
        honest = torch.arange(n)[~torch.isin(torch.arange(n), fed.malicious.cpu())]
        extra = max(k - len(fed.malicious), 0)
        chosen = torch.cat([fed.malicious.cpu(), honest[torch.randperm(len(honest), generator=g)[:extra]]])
    else:
        chosen = torch.randperm(n, generator=g)[:k]
    return torch.sort(chosen).values.to(fed.device)


@dataclass
class LoopState:
    """What changes from round to round (and is checkpointed)."""

    params: Tensor
    round: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    previous_malicious: dict[int, Tensor] = field(default_factory=dict)
    poisoned: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    diverged_round: int | None = None
    #: The global model before the last step (attacks that read the last global update).
    previous_params: Tensor | None = None


def client_jobs(fed: Federation, state: LoopState, rnd: int, ids: Tensor, attacked: Tensor) -> list[ClientJob]:
    """Training jobs: honest data for honest rows, poisoned copies for attacking rows."""
    data, jobs = fed.data, []
    mal_slot = {int(c): i for i, c in enumerate(fed.malicious.tolist())}
    for cid, bad in zip(ids.tolist(), attacked.tolist(), strict=True):
        g = generator(fed.cfg.seed, "train", rnd, cid)
        idx = fed.parts[cid]
        if bad and fed.attack is not None:
            if cid not in state.poisoned:
                x, y = fed.attack.poison(
                    data.x_train[idx], data.y_train[idx], client_id=cid, slot=mal_slot[cid],
                    generator=generator(fed.cfg.seed, "poison", cid),
                )
                state.poisoned[cid] = (x, y)
            x, y = state.poisoned[cid]
            jobs.append(ClientJob(cid, x, y, torch.arange(len(y), device=fed.device), g))
        else:
            jobs.append(ClientJob(cid, data.x_train, data.y_train, idx, g))
    return jobs


def craft_updates(
    fed: Federation, state: LoopState, rnd: int, ids: Tensor, updates: Tensor, weights: Tensor,
    attacked: Tensor, round_ctx: RoundContext,
) -> Tensor:
    """Replace the attacking rows by what the attack crafts; validate their shape."""
    attack, cfg = fed.attack, fed.cfg
    assert attack is not None
    fake = fed.is_fake(ids)
    level = Knowledge(cfg.attack.knowledge)
    sees_honest = sees_honest_updates(level)
    # A defense-aware attacker probes a private copy of the defense, with its own
    # generator and rows ordered honest-then-malicious as it stacks candidates, so
    # its probing neither consumes the server's random draws nor changes the state
    # of stateful rules (centered clipping, FoolsGold).
    aware = level is Knowledge.DEFENSE_AWARE
    mal_ids = ids[attacked].tolist()
    prev = torch.stack([state.previous_malicious.get(c, torch.zeros_like(updates[0])) for c in mal_ids])
    ctx = AttackContext(
        round=rnd,
        own_updates=updates[attacked].clone(),
        own_weights=weights[attacked].clone(),
        honest_updates=updates[~attacked].clone() if sees_honest else None,
        honest_weights=weights[~attacked].clone() if sees_honest else None,
        num_participants=len(ids),
        global_params=round_ctx.global_params.clone(),
        server_lr=cfg.server.lr,
        generator=generator(cfg.seed, "attack", rnd),
        defense=copy.deepcopy(fed.defense) if aware else None,
        defense_ctx=RoundContext(rnd, torch.cat([ids[~attacked], ids[attacked]]),
                                 generator(cfg.seed, "attack", rnd, 1), round_ctx.global_params,
                                 round_ctx.slices, round_ctx.root_update, round_ctx.model) if aware else None,
        previous_updates=prev,
        own_fake=fake[attacked].clone() if fed.num_fake else None,
        campaign_generator=generator(cfg.seed, "attack"),
    )
    crafted = check_crafted(attack.craft(ctx), int(attacked.sum()), updates.shape[1], attack=cfg.attack.name)
    out = updates.clone()
    out[attacked] = crafted.to(updates.dtype)
    for c, row in zip(mal_ids, crafted, strict=True):
        state.previous_malicious[c] = row.detach().clone()
    return out


def sequential_engine(fed: Federation) -> SequentialEngine:
    """The run's engine when it is sequential, else a sequential one on the same model and plan."""
    return fed.engine if isinstance(fed.engine, SequentialEngine) else SequentialEngine(fed.model, fed.spec, fed.plan)


def train_self(fed: Federation, state: LoopState, rnd: int, job: ClientJob, slot: int,
               global_params: Tensor) -> tuple[Tensor, float]:
    """An attack-owned malicious client's update: :meth:`Attack.train` with the honest SGD as a tool.

    ``global_params`` is the model the clients received this round.
    """
    attack, cfg, engine = fed.attack, fed.cfg, sequential_engine(fed)
    assert attack is not None
    cid = job.client_id
    idx = fed.parts[cid]

    def train(x: Tensor, y: Tensor, hooks: StepHooks | None) -> tuple[Tensor, float]:
        g = generator(cfg.seed, "train", rnd, cid)
        return engine.train_one(global_params, ClientJob(cid, x, y, torch.arange(len(y), device=fed.device), g), hooks)

    return attack.train(MaliciousTraining(
        round=rnd, client_id=cid, slot=slot, clean_x=fed.data.x_train[idx], clean_y=fed.data.y_train[idx],
        x=job.x, y=job.y, global_params=global_params.clone(),
        previous_params=None if state.previous_params is None else state.previous_params.clone(),
        train=train, model=fed.eval_model, spec=fed.spec, generator=generator(cfg.seed, "attack", rnd, 2, cid),
        plan=fed.plan,
    ))


def root_update_fn(fed: Federation, rnd: int) -> Callable[[Tensor], Tensor] | None:
    """FLTrust's server update on its root dataset, or ``None`` without root data."""
    if fed.root_index is None:
        return None
    engine = sequential_engine(fed)
    index = fed.root_index

    def root_update(global_params: Tensor) -> Tensor:
        job = ClientJob(-1, fed.data.x_train, fed.data.y_train, index, generator(fed.cfg.seed, "root", rnd))
        return engine.train_one(global_params, job)[0]

    return root_update


def evaluate_global(fed: Federation, params: Tensor) -> dict[str, float]:
    """Clean accuracy, loss, per-class recall, backdoor success and targeted misclassification."""
    fed.spec.load_(fed.eval_model, params)
    data, bs = fed.data, fed.cfg.eval.batch_size
    preds, loss = evaluate(fed.eval_model, data.x_test, data.y_test, bs)
    y = data.y_test
    out: dict[str, float] = {"test_accuracy": float((preds == y).float().mean()), "test_loss": loss}
    counts = torch.bincount(y, minlength=data.num_classes).clamp_min(1)
    hits = torch.bincount(y[preds == y], minlength=data.num_classes)
    for c, r in enumerate((hits / counts).tolist()):
        out[f"recall_{c}"] = r
    attack = fed.attack
    if attack is not None and attack.target_class is not None:
        target = attack.target_class
        backdoored = attack.backdoor_inputs(data.x_test, y)
        if backdoored is not None:
            inputs, chosen = backdoored
            p, _ = evaluate(fed.eval_model, inputs, y[chosen], bs)
            out["attack_success_rate"] = float((p == target).float().mean()) if len(p) else float("nan")
        if attack.source_classes is not None:
            src = torch.isin(y, torch.tensor(attack.source_classes, device=y.device))
            out["targeted_misclassification"] = float((preds[src] == target).float().mean()) if src.any() else float("nan")
    return out


def run_round(fed: Federation, state: LoopState) -> dict[str, Any]:
    """Run one round in place on ``state``; return its history record."""
    cfg, rnd = fed.cfg, state.round
    t0 = time.perf_counter()
    sampled = sample_clients(fed, rnd)
    admitted = fed.auditor.admit(rnd, sampled) if fed.auditor is not None else torch.ones_like(sampled, dtype=torch.bool)
    ids = sampled[admitted]
    active = attack_active(cfg.attack, cfg.seed, rnd)
    if fed.num_fake and not active:
        ids = ids[~fed.is_fake(ids)]  # a fake client has no data: outside the schedule it sends nothing
    fake = fed.is_fake(ids)
    malicious = fed.is_malicious(ids)
    attacked = malicious & active
    weights = fed.sizes[ids]
    # The model the clients receive: the global one, unless the auditor plants something in it
    # (BackdoorIndicator's indicator task); the server's step is applied to what was sent.
    broadcast = getattr(fed.auditor, "broadcast", None)
    sent = broadcast(rnd, state.params) if broadcast is not None else state.params
    round_ctx = RoundContext(rnd, ids, generator(cfg.seed, "defense", rnd), sent.clone(),
                             fed.spec.slices, root_update_fn(fed, rnd), fed.probe)

    # local training: attackers that skip training, and fake clients, send zeros into craft; attacks
    # that own their clients' training (owns_training) train those rows in attack.train()
    skip = fake | (attacked & torch.tensor(fed.attack is not None and not fed.attack.trains, device=ids.device))
    own = attacked & ~skip & torch.tensor(fed.attack is not None and fed.attack.owns_training, device=ids.device)
    trainable = torch.nonzero(~skip).flatten().tolist()
    job_of = dict(zip(trainable, client_jobs(fed, state, rnd, ids[~skip], attacked[~skip]), strict=True))
    engine_rows = ~skip & ~own
    train_jobs = [job_of[i] for i in torch.nonzero(engine_rows).flatten().tolist()]
    updates = torch.zeros(len(ids), fed.spec.dim, device=fed.device)
    losses = torch.full((len(ids),), float("nan"))
    if train_jobs:
        u, lo = fed.engine.train(sent, train_jobs)
        updates[engine_rows], losses[engine_rows.cpu()] = u, lo
    if own.any():
        mal_slot = {int(c): i for i, c in enumerate(fed.malicious.tolist())}
        for i in torch.nonzero(own).flatten().tolist():
            updates[i], losses[i] = train_self(fed, state, rnd, job_of[i], mal_slot[job_of[i].client_id], sent)
    honest_clipped = 0
    if cfg.local.clip_norm is not None:
        clipped, was = clip_rows(updates[~attacked], cfg.local.clip_norm)
        updates[~attacked] = clipped
        honest_clipped = int(was.sum())
    if attacked.any():
        updates = craft_updates(fed, state, rnd, ids, updates, weights, attacked, round_ctx)
    t1 = time.perf_counter()

    # the server's step: sanitize non-finite rows, audit, defend the kept rows, observe
    server = audit_and_defend(updates, weights, round_ctx, fed.defense, fed.auditor,
                              nonfinite=cfg.defense.nonfinite, on_violation=cfg.defense.on_violation)
    res, updates, keep, decision, skipped = server.result, server.updates, server.keep, server.decision, server.error
    state.previous_params = state.params
    noise_g = generator(cfg.seed, "server", rnd) if cfg.server.noise_std > 0 else None
    state.params = server_step(sent, res.aggregate, lr=cfg.server.lr, noise_std=cfg.server.noise_std,
                               generator=noise_g)
    t2 = time.perf_counter()

    diverged = not bool(torch.isfinite(state.params).all())
    record: dict[str, Any] = {
        "round": rnd,
        "participants": len(ids),
        "malicious_participants": int(malicious.sum()),
        **({"fake_participants": int(fake.sum())} if fed.num_fake else {}),
        "attack_active": bool(active and malicious.any()),
        "train_loss": float(losses[~losses.isnan()].mean()) if (~losses.isnan()).any() else float("nan"),
        "update_norm_mean": float(row_norms(updates).nan_to_num(posinf=3.4e38).mean()),
        "clipped": res.clipped + honest_clipped,
        "kept": int(keep.sum()),
        "nonfinite_rows": server.nonfinite,
        "aggregation_skipped": skipped,
    }
    if cfg.server.noise_std > 0:
        record["server_noise_std"] = cfg.server.noise_std
    for key, value in res.info.items():
        record[f"defense_{key}"] = value
    last = rnd == cfg.rounds - 1
    if not diverged and (rnd % cfg.eval.every == 0 or last):
        record.update(evaluate_global(fed, state.params))
    t3 = time.perf_counter()

    # per-client log (ground truth recorded for metrics only)
    selected, sel_w = server.selected, server.weights
    norms = row_norms(updates)
    for i, cid in enumerate(ids.tolist()):
        row: dict[str, Any] = {
            "round": rnd, "client": cid, "malicious": bool(malicious[i]), "attacked": bool(attacked[i]),
            "samples": int(weights[i]), "norm": float(norms[i]), "selected": bool(selected[i]),
            "weight": float(sel_w[i]),
        }
        if fed.num_fake:
            row["fake"] = bool(fake[i])
        if decision is not None:
            row["score"] = float(decision.score[i])
            row["flagged"] = bool(decision.flagged[i])
            row["kept"] = bool(decision.keep[i])
            for name, sig in decision.signals.items():
                row[name] = float(sig[i])
        state.clients.append(row)
    if fed.auditor is not None:
        quarantined = sampled[~admitted].tolist()
        for cid in quarantined:
            state.clients.append({"round": rnd, "client": cid, "malicious": bool(fed.is_malicious(torch.tensor([cid], device=fed.device))[0]),
                                  "attacked": False, "samples": int(fed.sizes[cid]), "norm": float("nan"),
                                  "selected": False, "weight": 0.0, "quarantined": True,
                                  **({"fake": cid >= fed.num_clients} if fed.num_fake else {})})
    state.timings.append({"round": rnd, "train_s": t1 - t0, "aggregate_s": t2 - t1, "eval_s": t3 - t2})
    state.history.append(record)
    if diverged:
        state.diverged_round = rnd
    state.round += 1
    return record


def drive(
    fed: Federation,
    state: LoopState,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    after_round: Callable[[LoopState], None] | None = None,
) -> LoopState:
    """Run rounds on ``state`` until ``cfg.rounds`` or divergence: the one round driver.

    Plain runs (:func:`run`) and checkpointed runs
    (:func:`fedpoison.simulation.checkpoint.run_with_checkpoints`) both drive
    their rounds here. ``progress`` gets each round's record; ``after_round``
    gets the state after each round (a checkpoint writer).
    """
    while state.round < fed.cfg.rounds and state.diverged_round is None:
        record = run_round(fed, state)
        if progress is not None:
            progress(record)
        if after_round is not None:
            after_round(state)
    return state


def run(
    config: ExperimentConfig | dict[str, Any] | str | None = None,
    *,
    overrides: list[str] | dict[str, Any] = (),  # type: ignore[assignment]
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run one experiment and return its :class:`~fedpoison.simulation.result.RunResult`.

    ``config`` is an :class:`ExperimentConfig`, a dict, a YAML path, or ``None``
    for the defaults; ``overrides`` are ``key=value`` strings or a dotted-key
    mapping. ``progress=True`` draws a bar on stderr (round, accuracy, ETA); a
    callable is called with each round's record.
    """
    from fedpoison.config_noops import check_run_config
    from fedpoison.progress import round_callback
    from fedpoison.simulation.result import make_result

    cfg = config if isinstance(config, ExperimentConfig) and not overrides else load_config(config, overrides)
    check_run_config(cfg)  # an attack with no attackers is an error; settings that do nothing warn
    start = time.perf_counter()
    with round_callback(progress, cfg.rounds) as on_round:
        fed = build_federation(cfg)
        state = LoopState(params=fed.init_params.clone())
        setup_s = time.perf_counter() - start
        drive(fed, state, progress=on_round)
    result: RunResult = make_result(fed, state, setup_s=setup_s)
    return result
