"""Contract checks for plug-ins, the project's own and yours.

Each family has a ``check_*`` function that runs every check of its contract
on one plug-in and raises :class:`ContractError` naming the first broken one,
and a ``*_checks`` function listing the checks as ``(name, callable)`` pairs,
for a test suite that reports each check on its own (``pytest.mark.parametrize``).

A plug-in is given as a registry name, a registry entry, or the class or
function itself; one that is not registered takes its params model and tags
from the arguments. The checks read the plug-in's tags, never its name:

- ``stateful``: fresh instances are compared, and the identical-rows check,
  whose answer depends on the initial state, is skipped;
- ``changes_scale``: a pre-aggregator's output rows need not be mixtures of
  its input rows;
- ``order_dependent``: permutation checks are skipped;
- ``quiet_params`` (registry meta): params that switch noise off, used by the
  checks that compare aggregates with exact answers.

Example
-------
>>> from fedpoison.testing import check_rule
>>> check_rule("median")
>>> import torch
>>> class Mutating:
...     def __init__(self, params=None, *, f=0):
...         pass
...     def __call__(self, updates, weights, ctx):
...         from fedpoison.defenses import AggregationResult
...         updates.mul_(0.5)
...         n = updates.shape[0]
...         return AggregationResult(updates.mean(0), torch.full((n,), 1 / n), torch.ones(n, dtype=torch.bool))
>>> check_rule(Mutating)
Traceback (most recent call last):
...
fedpoison.testing.checks.ContractError: check_rule(Mutating): does_not_mutate_inputs: it changed its updates argument
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from fedpoison.errors import FedPoisonError
from fedpoison.registry import Entry, NoParams, Registry
from fedpoison.testing.fakes import (
    make_attack_context,
    make_images,
    make_malicious_training,
    make_round_context,
    make_updates,
)

Check = tuple[str, Callable[[], None]]

#: Rows, columns and assumed Byzantine rows of the rule checks: n >= 4f + 3, so
#: every requirement of the built-in rules holds.
N, D, F = 11, 40, 2


class ContractError(AssertionError):
    """A plug-in broke its family's contract; the message names the check and what went wrong."""


def _fail(who: str, check: str, what: str) -> ContractError:
    return ContractError(f"{who}: {check}: {what}")


def _entry(registry: Registry[Any], plugin: Any, params: type[BaseModel] | None, tags: Iterable[str] | None,
           **meta: Any) -> Entry[Any]:
    """The registry entry of ``plugin``, or one made up from the arguments for an unregistered plug-in."""
    if isinstance(plugin, Entry):
        return plugin
    if isinstance(plugin, str):
        return registry.get(plugin)
    for entry in registry:
        if entry.obj is plugin:
            return entry
    name = getattr(plugin, "__name__", type(plugin).__name__)
    return Entry(name, plugin, "", params or NoParams, tags=frozenset(tags or ()), meta=meta)


def _who(family: str, entry: Entry[Any]) -> str:
    return f"check_{family}({entry.obj.__name__ if hasattr(entry.obj, '__name__') else entry.name})"


@contextlib.contextmanager
def _other_global_seed(seed: int) -> Iterator[None]:
    """Run with torch's global generator reseeded, restoring it after: catches plug-ins that ignore theirs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _run_all(checks: list[Check]) -> None:
    for _, fn in checks:
        fn()


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a, nan=1.5e-7), torch.nan_to_num(b, nan=1.5e-7)))


# ---- aggregation rules --------------------------------------------------------------------------------
def rule_checks(rule: Any, *, params: type[BaseModel] | None = None, tags: Iterable[str] | None = None) -> list[Check]:
    """The contract checks of an aggregation rule, as ``(name, callable)`` pairs."""
    from fedpoison.defenses.base import AggregationResult
    from fedpoison.defenses.compose import Defense
    from fedpoison.defenses.registry import RULES
    from fedpoison.errors import AggregationError
    from fedpoison.simulation.server import audit_and_defend

    entry = _entry(RULES, rule, params, tags)
    who = _who("rule", entry)
    quiet = dict(entry.meta.get("quiet_params", {}))

    def build(f: int = F, **values: Any) -> Any:
        return entry.obj(entry.params(**values), f=f)

    def call(rule_obj: Any, x: Tensor, w: Tensor, ctx: Any, check: str) -> Any:
        try:
            res = rule_obj(x, w, ctx)
        except FedPoisonError:
            raise
        except Exception as exc:
            raise _fail(who, check, f"raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(res, AggregationResult):
            raise _fail(who, check, f"expected an AggregationResult, got {type(res).__name__}")
        return res

    def result_shape() -> None:
        x, w = make_updates(N, D)
        res = call(build(), x, w, make_round_context(N, D), "result_shape")
        problems = []
        if res.aggregate.shape != (D,) or res.aggregate.dtype != torch.float32:
            problems.append(f"aggregate: expected float32 of shape ({D},), got {res.aggregate.dtype} {tuple(res.aggregate.shape)}")
        elif not torch.isfinite(res.aggregate).all():
            problems.append("aggregate: expected finite values for finite rows")
        if res.weights.shape != (N,) or not res.weights.dtype.is_floating_point:
            problems.append(f"weights: expected floats of shape ({N},), got {res.weights.dtype} {tuple(res.weights.shape)}")
        elif (res.weights < 0).any() or float(res.weights.sum()) > 1.0 + 1e-5:
            problems.append(f"weights: expected >= 0 summing to at most 1, got sum {float(res.weights.sum()):.4g}")
        if res.selected.shape != (N,) or res.selected.dtype != torch.bool:
            problems.append(f"selected: expected bool of shape ({N},), got {res.selected.dtype} {tuple(res.selected.shape)}")
        if res.scores is not None and res.scores.shape != (N,):
            problems.append(f"scores: expected None or shape ({N},), got {tuple(res.scores.shape)}")
        if not isinstance(res.clipped, int) or not 0 <= res.clipped <= N:
            problems.append(f"clipped: expected an int in [0, {N}], got {res.clipped!r}")
        if not all(isinstance(v, float) for v in res.info.values()):
            problems.append("info: expected float values")
        if entry.meta.get("filters") is False and res.selected.shape == (N,) and not bool(res.selected.all()):
            problems.append("selected: a rule registered with filters=False must keep every row")
        if problems:
            raise _fail(who, "result_shape", "; ".join(problems))

    def does_not_mutate_inputs() -> None:
        x, w = make_updates(N, D)
        x_t = x.T.contiguous().T  # a non-contiguous view: sorting it in place is a mutation too
        ctx = make_round_context(N, D)
        before = {"updates": x_t.clone(), "weights": w.clone(), "ctx.global_params": ctx.global_params.clone(),
                  "ctx.client_ids": ctx.client_ids.clone()}
        call(build(), x_t, w, ctx, "does_not_mutate_inputs")
        after = {"updates": x_t, "weights": w, "ctx.global_params": ctx.global_params, "ctx.client_ids": ctx.client_ids}
        for key, value in before.items():
            if not torch.equal(after[key], value):
                raise _fail(who, "does_not_mutate_inputs", f"it changed its {key} argument")

    def deterministic_under_its_generator() -> None:
        x, w = make_updates(N, D)
        with _other_global_seed(1):
            a = call(build(), x, w, make_round_context(N, D, seed=3), "deterministic_under_its_generator")
        with _other_global_seed(2):
            b = call(build(), x, w, make_round_context(N, D, seed=3), "deterministic_under_its_generator")
        if not (_same(a.aggregate, b.aggregate) and _same(a.selected, b.selected) and _same(a.weights, b.weights)):
            raise _fail(who, "deterministic_under_its_generator",
                        "two calls with the same ctx.generator seed gave different results: draw every random "
                        "number from ctx.generator, never from torch's global generator")

    def permutation_invariant() -> None:
        x, w = make_updates(N, D)
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(5))
        a = call(build(**quiet), x, w, make_round_context(N, D), "permutation_invariant")
        b = call(build(**quiet), x[perm], w[perm], make_round_context(N, D, ids=torch.arange(N)[perm]),
                 "permutation_invariant")
        if not torch.allclose(a.aggregate, b.aggregate, rtol=1e-4, atol=1e-5):
            raise _fail(who, "permutation_invariant", "permuting the rows (and their client ids) changed the aggregate")
        if not torch.equal(a.selected[perm], b.selected):
            raise _fail(who, "permutation_invariant", "permuting the rows did not permute the selection")

    def identical_rows() -> None:
        row = torch.linspace(-1, 1, D)
        res = call(build(**quiet), row.repeat(N, 1), torch.ones(N), make_round_context(N, D, root=lambda p: row.clone()),
                   "identical_rows")
        if not torch.allclose(res.aggregate, row, rtol=1e-4, atol=1e-5):
            raise _fail(who, "identical_rows", "when every row is the same, the aggregate must be that row")

    def survives_hostile_rows() -> None:
        for label, value in (("a NaN row", float("nan")), ("an Inf row", float("inf")), ("a 1e38 row", 1e38)):
            x, w = make_updates(N, D)
            x[3] = value
            try:
                entry.obj(entry.params(**quiet), f=F)(x.clone(), w, make_round_context(N, D))
            except FedPoisonError:
                pass
            except Exception as exc:
                raise _fail(who, "survives_hostile_rows", f"{label} made it raise {type(exc).__name__}: {exc} "
                            "(return a result, or raise AggregationError naming the problem)") from exc
            # The server's step drops the NaN/Inf row (defense.nonfinite: drop) before the defense runs.
            defense = Defense(build(**quiet), name=entry.name)
            try:
                res = audit_and_defend(x, w, make_round_context(N, D), defense, on_violation="raise")
            except AggregationError:
                continue
            if not torch.isfinite(res.aggregate).all():
                raise _fail(who, "survives_hostile_rows", f"{label}: the server step's aggregate is not finite")

    def requirement_enforced() -> None:
        req = entry.requires
        if req is None or req.holds is None:
            return
        for f in range(1, 6):
            for n in range(1, 4 * f + 4):
                probe = entry.params()
                if req.violated(n, f, probe):
                    x, w = make_updates(n, D)
                    try:
                        entry.obj(probe, f=f)(x, w, make_round_context(n, D))
                    except AggregationError:
                        return
                    except Exception as exc:
                        raise _fail(who, "requirement_enforced", f"n={n}, f={f} breaks '{req.text}', expected "
                                    f"AggregationError, got {type(exc).__name__}: {exc}") from exc
                    raise _fail(who, "requirement_enforced",
                                f"n={n}, f={f} breaks '{req.text}', but the rule aggregated anyway")

    checks: list[Check] = [
        ("result_shape", result_shape),
        ("does_not_mutate_inputs", does_not_mutate_inputs),
        ("deterministic_under_its_generator", deterministic_under_its_generator),
        ("survives_hostile_rows", survives_hostile_rows),
        ("requirement_enforced", requirement_enforced),
    ]
    if not entry.has("order_dependent"):
        checks.append(("permutation_invariant", permutation_invariant))
    if not entry.has("stateful"):
        checks.append(("identical_rows", identical_rows))
    return checks


def check_rule(rule: Any, *, params: type[BaseModel] | None = None, tags: Iterable[str] | None = None) -> None:
    """Run every contract check of an aggregation rule; raise :class:`ContractError` on the first broken one."""
    _run_all(rule_checks(rule, params=params, tags=tags))


# ---- pre-aggregators --------------------------------------------------------------------------------
def pre_aggregator_checks(pre: Any, *, params: type[BaseModel] | None = None,
                          tags: Iterable[str] | None = None) -> list[Check]:
    """The contract checks of a pre-aggregator, as ``(name, callable)`` pairs."""
    from fedpoison.defenses.base import PreResult
    from fedpoison.defenses.registry import PRE_AGGREGATORS

    entry = _entry(PRE_AGGREGATORS, pre, params, tags)
    who = _who("pre_aggregator", entry)

    def run(x: Tensor, w: Tensor, ctx: Any, check: str) -> Any:
        try:
            out = entry.obj(entry.params(), f=F)(x, w, ctx)
        except FedPoisonError:
            raise
        except Exception as exc:
            raise _fail(who, check, f"raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, PreResult):
            raise _fail(who, check, f"expected a PreResult, got {type(out).__name__}")
        return out

    def result_shape_and_groups() -> None:
        x, w = make_updates(N, D)
        x0, w0 = x.clone(), w.clone()
        out = run(x, w, make_round_context(N, D), "result_shape_and_groups")
        if not (torch.equal(x, x0) and torch.equal(w, w0)):
            raise _fail(who, "result_shape_and_groups", "it changed its inputs")
        m = out.updates.shape[0]
        if out.updates.shape != (m, D) or out.updates.dtype != torch.float32 or out.weights.shape != (m,):
            raise _fail(who, "result_shape_and_groups", f"expected ({m}, {D}) float32 rows and ({m},) weights")
        rows_out = getattr(entry.obj, "rows_out", None)
        if rows_out is not None and rows_out(N, entry.params()) != m:
            raise _fail(who, "result_shape_and_groups", f"rows_out({N}) says {rows_out(N, entry.params())} rows, got {m}")
        if rows_out is None and m != N:
            raise _fail(who, "result_shape_and_groups", f"changed the number of rows ({N} -> {m}) without rows_out")
        if out.groups is not None:
            if out.groups.shape != (m, N):
                raise _fail(who, "result_shape_and_groups", f"groups: expected shape ({m}, {N})")
            if not torch.allclose(out.groups.sum(dim=1), torch.ones(m)):
                raise _fail(who, "result_shape_and_groups", "groups: each output row's mixing weights must sum to 1")
            if not entry.has("changes_scale") and not torch.allclose(out.groups @ x, out.updates, rtol=1e-4, atol=1e-5):
                raise _fail(who, "result_shape_and_groups", "groups @ updates must give the output rows "
                            "(declare the changes_scale tag if they are not mixtures)")

    def deterministic_under_its_generator() -> None:
        x, w = make_updates(N, D)
        with _other_global_seed(1):
            a = run(x, w, make_round_context(N, D), "deterministic_under_its_generator")
        with _other_global_seed(2):
            b = run(x, w, make_round_context(N, D), "deterministic_under_its_generator")
        if not _same(a.updates, b.updates):
            raise _fail(who, "deterministic_under_its_generator", "same ctx.generator seed, different rows")

    def permutation_equivariant() -> None:
        x, w = make_updates(N, D)
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(5))
        a = run(x, w, make_round_context(N, D), "permutation_equivariant")
        b = run(x[perm], w[perm], make_round_context(N, D, ids=torch.arange(N)[perm]), "permutation_equivariant")
        # A pre-aggregator that appends rows (rows_out > n) keeps the n input rows first: those must be
        # permuted, the appended ones must not change.
        same = a.updates.shape == b.updates.shape and torch.allclose(a.updates[:N][perm], b.updates[:N], rtol=1e-4,
                                                                     atol=1e-5)
        if same and a.updates.shape[0] > N:
            same = torch.allclose(a.updates[N:], b.updates[N:], rtol=1e-4, atol=1e-5)
        if not same:
            raise _fail(who, "permutation_equivariant", "permuting the input rows must permute the output rows")

    checks: list[Check] = [("result_shape_and_groups", result_shape_and_groups),
                           ("deterministic_under_its_generator", deterministic_under_its_generator)]
    if not entry.has("order_dependent"):
        checks.append(("permutation_equivariant", permutation_equivariant))
    return checks


def check_pre_aggregator(pre: Any, *, params: type[BaseModel] | None = None, tags: Iterable[str] | None = None) -> None:
    """Run every contract check of a pre-aggregator."""
    _run_all(pre_aggregator_checks(pre, params=params, tags=tags))


# ---- attacks ----------------------------------------------------------------------------------------
def attack_checks(attack: Any, *, params: type[BaseModel] | None = None,
                  tags: Iterable[str] | None = None) -> list[Check]:
    """The contract checks of an attack, as ``(name, callable)`` pairs."""
    from fedpoison.attacks import ATTACKS
    from fedpoison.attacks.base import Attack, AttackKind, Knowledge

    entry = _entry(ATTACKS, attack, params, tags)
    who = _who("attack", entry)
    cls = entry.obj

    def build(collude: bool = False) -> Attack:
        built: Attack = cls(entry.params(), num_classes=10, input_shape=(1, 8, 8), collude=collude)
        return built

    def sees_honest() -> bool:
        return bool(cls.knowledge.level >= Knowledge.OMNISCIENT.level)

    def declares_its_threat_model() -> None:
        if not isinstance(getattr(cls, "kind", None), AttackKind) or not isinstance(getattr(cls, "knowledge", None), Knowledge):
            raise _fail(who, "declares_its_threat_model", "set the class attributes kind (AttackKind) and knowledge (Knowledge)")
        for key, value in (("kind", cls.kind.value), ("knowledge", cls.knowledge.value), ("trains", cls.trains)):
            if key in entry.meta and entry.meta[key] != value:
                raise _fail(who, "declares_its_threat_model", f"registry meta {key}={entry.meta[key]!r}, class says {value!r}")

    def craft_contract() -> None:
        for collude in (False, True):
            ctx = make_attack_context(m=3, k=7, d=12, honest=sees_honest(), previous=True)
            snapshot = {k: v.clone() for k, v in vars(ctx).items() if isinstance(v, Tensor)}
            with _other_global_seed(1):
                out = build(collude).craft(ctx)
            if not isinstance(out, Tensor) or out.shape != (3, 12) or out.dtype != torch.float32:
                got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
                raise _fail(who, "craft_contract", f"expected (m, d) = (3, 12) float32 rows, got {got}")
            for key, before in snapshot.items():
                if not torch.equal(getattr(ctx, key), before):
                    raise _fail(who, "craft_contract", f"craft changed ctx.{key}")
            with _other_global_seed(2):
                again = build(collude).craft(make_attack_context(m=3, k=7, d=12, honest=sees_honest(), previous=True))
            if not _same(out, again):
                raise _fail(who, "craft_contract", "same context and ctx.generator, different rows: draw from ctx.generator")
            if not entry.has("sends_nonfinite") and not torch.isfinite(out).all():
                raise _fail(who, "craft_contract", "crafted non-finite rows (declare the sends_nonfinite tag if meant)")

    def craft_any_number_of_attackers() -> None:
        for m, k in ((1, 5), (4, 0)):
            out = build().craft(make_attack_context(m=m, k=k, d=6, honest=sees_honest()))
            if out.shape != (m, 6):
                raise _fail(who, "craft_any_number_of_attackers", f"m={m}, k={k}: expected ({m}, 6), got {tuple(out.shape)}")

    def poison_contract() -> None:
        x, y = make_images(40)
        x0, y0 = x.clone(), y.clone()
        a = build()
        with _other_global_seed(1):
            xp, yp = a.poison(x, y, client_id=5, slot=1, generator=torch.Generator().manual_seed(7))
        if not (torch.equal(x, x0) and torch.equal(y, y0)):
            raise _fail(who, "poison_contract", "poison changed its inputs (return poisoned copies)")
        if xp.shape[1:] != x.shape[1:] or xp.dtype != x.dtype or yp.shape != (xp.shape[0],) or yp.dtype != torch.int64:
            raise _fail(who, "poison_contract", "expected images of the input's shape and dtype and int64 labels, one each")
        if xp.shape[0] < x.shape[0] or (xp.shape[0] > x.shape[0] and not torch.equal(xp[: len(x)], x)):
            raise _fail(who, "poison_contract", "expected the same samples, or the clean ones followed by poisoned copies")
        if int(yp.min()) < 0 or int(yp.max()) >= 10:
            raise _fail(who, "poison_contract", "labels outside [0, num_classes)")
        with _other_global_seed(2):
            xq, yq = build().poison(x, y, client_id=5, slot=1, generator=torch.Generator().manual_seed(7))
        if not (torch.equal(xp, xq) and torch.equal(yp, yq)):
            raise _fail(who, "poison_contract", "same data and generator, different poison: draw from the generator given")
        if cls.kind == AttackKind.UPDATE and not (torch.equal(xp, x) and torch.equal(yp, y)):
            raise _fail(who, "poison_contract", "an update attack (kind UPDATE) must leave data alone")

    def backdoor_contract() -> None:
        a = build()
        x, _ = make_images(10)
        x0 = x.clone()
        triggered = a.backdoor(x)
        if not torch.equal(x, x0):
            raise _fail(who, "backdoor_contract", "backdoor changed its input")
        if triggered is not None and (triggered.shape != x.shape or a.target_class is None):
            raise _fail(who, "backdoor_contract", "a trigger keeps the input's shape and needs a target_class")
        if a.source_classes is not None and (a.target_class is None or a.target_class in a.source_classes):
            raise _fail(who, "backdoor_contract", "source_classes need a target_class outside them")

    def train_contract() -> None:
        if not cls.owns_training:
            return
        x, y = make_images(24)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 16), nn.ReLU(),
                              nn.Linear(16, 10))
        x0, y0 = x.clone(), y.clone()
        with _other_global_seed(1):
            job = make_malicious_training(build(), x, y, model=model)
            start = job.global_params.clone()
            row, loss = build().train(job)
        if not isinstance(loss, float):
            raise _fail(who, "train_contract", f"expected (update, mean loss as a float), got a {type(loss).__name__} loss")
        if not (torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(job.global_params, start)):
            raise _fail(who, "train_contract", "train changed its inputs")
        if row.shape != start.shape or not torch.isfinite(row).all() or not row.abs().sum() > 0:
            raise _fail(who, "train_contract", f"expected a finite non-zero update of shape {tuple(start.shape)}")
        with _other_global_seed(2):
            again, _ = build().train(make_malicious_training(build(), x, y, model=model))
        if not torch.equal(row, again):
            raise _fail(who, "train_contract", "same job, different update: draw from the job's generator")

    return [("declares_its_threat_model", declares_its_threat_model), ("craft_contract", craft_contract),
            ("craft_any_number_of_attackers", craft_any_number_of_attackers), ("poison_contract", poison_contract),
            ("backdoor_contract", backdoor_contract), ("train_contract", train_contract)]


def check_attack(attack: Any, *, params: type[BaseModel] | None = None, tags: Iterable[str] | None = None) -> None:
    """Run every contract check of an attack."""
    _run_all(attack_checks(attack, params=params, tags=tags))


# ---- auditors ---------------------------------------------------------------------------------------
def auditor_checks(auditor: Any, *, params: type[BaseModel] | None = None,
                   tags: Iterable[str] | None = None) -> list[Check]:
    """The contract checks of an auditor, as ``(name, callable)`` pairs."""
    from fedpoison.audit import AUDITORS
    from fedpoison.defenses.base import AggregationResult, RoundContext

    entry = _entry(AUDITORS, auditor, params, tags)
    who = _who("auditor", entry)
    clients, d = 12, 10

    def build() -> Any:
        return entry.obj(entry.params(), num_clients=clients)

    def rows(rnd: int, n: int) -> Tensor:
        g = torch.Generator().manual_seed(100 + rnd)
        x = 0.5 + 0.1 * torch.randn(n, d, generator=g)
        if n:
            x[0] = -10.0 * x[0]
        return x

    def drive(aud: Any, rounds: range) -> list[dict[str, Tensor]]:
        out = []
        for rnd in rounds:
            sampled = torch.sort(torch.randperm(clients, generator=torch.Generator().manual_seed(rnd))[:8]).values
            admitted = aud.admit(rnd, sampled)
            ids = sampled[admitted]
            x = rows(rnd, len(ids))
            ctx = RoundContext(rnd, ids, torch.Generator().manual_seed(rnd), torch.zeros(d))
            dec = aud.screen(x, torch.ones(len(ids)), ctx)
            k = int(dec.keep.sum())
            sel = torch.ones(k, dtype=torch.bool)
            aud.observe(RoundContext(rnd, ids[dec.keep], ctx.generator, ctx.global_params), dec,
                        AggregationResult(x[dec.keep].mean(0) if k else torch.zeros(d), sel.float() / max(k, 1), sel))
            out.append({"admitted": admitted, "keep": dec.keep, "weight": dec.weight, "score": dec.score,
                        "flagged": dec.flagged})
        return out

    def hooks_shapes_no_mutation() -> None:
        aud = build()
        ids = torch.tensor([0, 2, 3, 5, 7, 8, 9, 11])
        admitted = aud.admit(0, ids)
        if admitted.shape != (8,) or admitted.dtype != torch.bool:
            raise _fail(who, "hooks_shapes_no_mutation", "admit: expected an (n,) bool mask")
        x, w = rows(0, 8), torch.arange(1.0, 9.0)
        x0, w0, ids0 = x.clone(), w.clone(), ids.clone()
        dec = aud.screen(x, w, RoundContext(0, ids, torch.Generator(), torch.zeros(d)))
        if not (torch.equal(x, x0) and torch.equal(w, w0) and torch.equal(ids, ids0)):
            raise _fail(who, "hooks_shapes_no_mutation", "screen changed its inputs")
        for field, dtype in (("keep", torch.bool), ("flagged", torch.bool), ("weight", torch.float32),
                             ("score", torch.float32)):
            t = getattr(dec, field)
            if t.shape != (8,) or t.dtype != dtype:
                raise _fail(who, "hooks_shapes_no_mutation", f"decision.{field}: expected (8,) {dtype}, got {t.dtype} {tuple(t.shape)}")
        if (dec.weight < 0).any() or not torch.isfinite(dec.weight).all():
            raise _fail(who, "hooks_shapes_no_mutation", "decision.weight: expected finite values >= 0")

    def deterministic_and_resumable() -> None:
        a, b = build(), build()
        with _other_global_seed(1):
            first = drive(a, range(6))
        with _other_global_seed(2):
            second = drive(b, range(6))
        if not all(torch.equal(u[k], v[k]) for u, v in zip(first, second, strict=True) for k in u):
            raise _fail(who, "deterministic_and_resumable", "two fresh auditors decided differently on the same rounds")
        resumed = build()
        resumed.load_state_dict(a.state_dict())
        for u, v in zip(drive(a, range(6, 10)), drive(resumed, range(6, 10)), strict=True):
            if not all(torch.equal(u[k], v[k]) for k in u):
                raise _fail(who, "deterministic_and_resumable", "an auditor restored from state_dict decided differently")

    return [("hooks_shapes_no_mutation", hooks_shapes_no_mutation),
            ("deterministic_and_resumable", deterministic_and_resumable)]


def check_auditor(auditor: Any, *, params: type[BaseModel] | None = None, tags: Iterable[str] | None = None) -> None:
    """Run every contract check of an auditor."""
    _run_all(auditor_checks(auditor, params=params, tags=tags))


# ---- partitions, datasets, models -------------------------------------------------------------------
def partition_checks(partition: Any, *, params: type[BaseModel] | None = None,
                     tags: Iterable[str] | None = None, labels: Tensor | None = None) -> list[Check]:
    """The contract checks of a partition, as ``(name, callable)`` pairs (on the digits labels by default)."""
    from fedpoison.data.base import PARTITIONERS

    entry = _entry(PARTITIONERS, partition, params, tags)
    who = _who("partition", entry)

    def the_labels() -> Tensor:
        if labels is not None:
            return labels
        from fedpoison.config import DatasetSection
        from fedpoison.data import load_dataset

        return load_dataset(DatasetSection()).y_train

    def split(y: Tensor, seed: int, global_seed: int) -> list[Tensor]:
        with _other_global_seed(global_seed):
            return list(entry.obj(y, 20, entry.params(), torch.Generator().manual_seed(seed)))

    def disjoint_index_sets() -> None:
        y = the_labels()
        parts = split(y, 0, 1)
        if len(parts) != 20:
            raise _fail(who, "disjoint_index_sets", f"expected one index tensor per client (20), got {len(parts)}")
        for i, p in enumerate(parts):
            if p.dtype != torch.int64 or p.dim() != 1 or len(p) == 0:
                raise _fail(who, "disjoint_index_sets", f"client {i}: expected a non-empty 1-D int64 tensor")
        everything = torch.cat(parts)
        if int(everything.min()) < 0 or int(everything.max()) >= len(y):
            raise _fail(who, "disjoint_index_sets", f"indices outside the training set [0, {len(y)})")
        if len(torch.unique(everything)) != len(everything):
            raise _fail(who, "disjoint_index_sets", "a sample was handed to more than one client")

    def deterministic_under_its_generator() -> None:
        y = the_labels()
        a, b = split(y, 0, 1), split(y, 0, 2)
        if not all(torch.equal(u, v) for u, v in zip(a, b, strict=True)):
            raise _fail(who, "deterministic_under_its_generator", "same generator seed, different split")

    return [("disjoint_index_sets", disjoint_index_sets),
            ("deterministic_under_its_generator", deterministic_under_its_generator)]


def check_partition(partition: Any, *, params: type[BaseModel] | None = None,
                    tags: Iterable[str] | None = None, labels: Tensor | None = None) -> None:
    """Run every contract check of a partition."""
    _run_all(partition_checks(partition, params=params, tags=tags, labels=labels))


def dataset_checks(dataset: Any, *, params: BaseModel | None = None) -> list[Check]:
    """The contract checks of a dataset loader, as ``(name, callable)`` pairs.

    ``params`` is the params instance to load with (default: the defaults).
    """
    from fedpoison.data.base import DATASETS, Dataset

    entry = _entry(DATASETS, dataset, type(params) if params is not None else None, None)
    who = _who("dataset", entry)
    loaded: dict[int, Any] = {}

    def load(seed: int = 0) -> Any:
        if seed not in loaded:
            loaded[seed] = entry.obj(params if params is not None else entry.params(), seed)
        return loaded[seed]

    def tensors_and_labels() -> None:
        ds = load()
        if not isinstance(ds, Dataset):
            raise _fail(who, "tensors_and_labels", f"expected a Dataset, got {type(ds).__name__}")
        for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
            if len(x) == 0 or len(x) != len(y):
                raise _fail(who, "tensors_and_labels", f"{split}: expected as many labels as inputs, and at least one")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise _fail(who, "tensors_and_labels", f"{split}: expected float32 inputs and int64 labels")
            if int(y.min()) < 0 or int(y.max()) >= ds.num_classes:
                raise _fail(who, "tensors_and_labels", f"{split}: labels outside [0, {ds.num_classes})")
            if not torch.isfinite(x).all():
                raise _fail(who, "tensors_and_labels", f"{split}: non-finite inputs")
        if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
            raise _fail(who, "tensors_and_labels", "train and test inputs differ in shape")

    def deterministic_under_its_seed() -> None:
        a = load(0)
        with _other_global_seed(5):
            b = entry.obj(params if params is not None else entry.params(), 0)
        if not (torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)):
            raise _fail(who, "deterministic_under_its_seed", "two loads with the same seed differ")

    return [("tensors_and_labels", tensors_and_labels), ("deterministic_under_its_seed", deterministic_under_its_seed)]


def check_dataset(dataset: Any, *, params: BaseModel | None = None) -> None:
    """Run every contract check of a dataset loader."""
    _run_all(dataset_checks(dataset, params=params))


def model_checks(model: Any, *, params: BaseModel | None = None, input_shape: tuple[int, ...] = (1, 8, 8),
                 num_classes: int = 10) -> list[Check]:
    """The contract checks of a model factory, as ``(name, callable)`` pairs."""
    from fedpoison.models import MODELS, ParamSpec

    entry = _entry(MODELS, model, type(params) if params is not None else None, None)
    who = _who("model", entry)

    def build() -> nn.Module:
        module = entry.obj(input_shape, num_classes, params if params is not None else entry.params())
        if not isinstance(module, nn.Module):
            raise _fail(who, "forward_shape", f"expected an nn.Module, got {type(module).__name__}")
        return module

    def forward_shape() -> None:
        torch.manual_seed(0)
        module = build()
        x = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))
        out = module(x)
        if out.shape != (4, num_classes) or not torch.isfinite(out).all():
            raise _fail(who, "forward_shape", f"expected finite logits of shape (4, {num_classes}), got {tuple(out.shape)}")
        if not any(p.requires_grad for p in module.parameters()):
            raise _fail(who, "forward_shape", "the model has no trainable parameters")

    def one_flat_vector() -> None:
        torch.manual_seed(0)
        module = build()
        if list(module.buffers()):
            raise _fail(who, "one_flat_vector", "the model has buffers (BatchNorm statistics?); use GroupNorm, so "
                        "the whole model is its parameters")
        spec = ParamSpec.of(module)
        flat = spec.flatten(module)
        if flat.shape != (sum(p.numel() for p in module.parameters()),):
            raise _fail(who, "one_flat_vector", "flatten must give one vector of every parameter")
        spec.load_(module, flat * 2)
        if not torch.equal(spec.flatten(module), flat * 2):
            raise _fail(who, "one_flat_vector", "load_ then flatten must give back the vector loaded")

    return [("forward_shape", forward_shape), ("one_flat_vector", one_flat_vector)]


def check_model(model: Any, *, params: BaseModel | None = None, input_shape: tuple[int, ...] = (1, 8, 8),
                num_classes: int = 10) -> None:
    """Run every contract check of a model factory."""
    _run_all(model_checks(model, params=params, input_shape=input_shape, num_classes=num_classes))

