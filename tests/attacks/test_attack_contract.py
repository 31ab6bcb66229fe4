"""One contract suite run over every registered attack.

Every attack: registry facts match the class, params reject unknown keys, the
config accepts its defaults, ``poison`` and ``craft`` return the right shapes
and dtypes, never mutate their inputs, and are deterministic under a seed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import fedpoison
from fedpoison.attacks import ATTACKS, AttackKind, Knowledge
from fedpoison.errors import ConfigError

REQUIRED = {
    "label_flip", "backdoor", "dba", "gaussian", "sign_flip", "scaling", "model_replacement",
    "norm_bounded", "alie", "ipm", "fang_krum", "fang_trim", "min_max", "min_sum", "mimic",
    "free_rider", "nonfinite",
}
NAMES = ATTACKS.names()


def test_registry_holds_exactly_the_documented_names() -> None:
    assert set(NAMES) == REQUIRED


@pytest.mark.parametrize("name", NAMES)
def test_registry_meta_matches_class_and_cites_a_paper(name: str) -> None:
    entry = ATTACKS.get(name)
    cls = entry.obj
    assert isinstance(cls.kind, AttackKind) and isinstance(cls.knowledge, Knowledge)
    assert entry.meta["kind"] == cls.kind.value
    assert entry.meta["knowledge"] == cls.knowledge.value
    assert entry.meta["trains"] is cls.trains
    assert entry.description and entry.reference
    if name != "nonfinite":  # a fault-injection probe, not from a paper
        assert re.search(r"(19|20)\d\d", entry.reference), entry.reference
    assert cls.__module__.startswith("fedpoison.attacks.")
    assert re.search(r"(19|20)\d\d|not from a paper", sys.modules[cls.__module__].__doc__ or "", re.I)


@pytest.mark.parametrize("name", NAMES)
def test_params_reject_unknown_keys(name: str) -> None:
    with pytest.raises(ValidationError):
        ATTACKS.get(name).params(no_such_key=1)


@pytest.mark.parametrize("name", NAMES)
def test_config_accepts_defaults_and_rejects_unknown_keys(name: str) -> None:
    level = ATTACKS.get(name).obj.knowledge.value
    base = [f"attack.name={name}", "attack.fraction=0.2", f"attack.knowledge={level}"]
    cfg = fedpoison.load_config(overrides=base)
    assert cfg.attack.name == name
    with pytest.raises(ConfigError, match=re.escape("attack.no_such_key")):
        fedpoison.load_config(overrides=[*base, "attack.no_such_key=1"])


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS.get(n).obj.knowledge != Knowledge.LOCAL])
def test_config_refuses_less_knowledge_than_the_attack_needs(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("attack.knowledge")):
        fedpoison.load_config(overrides=[f"attack.name={name}", "attack.knowledge=local"])


@pytest.mark.parametrize("name", ["fang_krum", "fang_trim"])
def test_config_refuses_fang_full_variant_without_the_honest_updates(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("attack.variant: 'full'")):
        fedpoison.load_config(overrides=[f"attack.name={name}", "attack.variant=full"])
    cfg = fedpoison.load_config(overrides=[f"attack.name={name}", "attack.variant=full", "attack.knowledge=omniscient"])
    assert cfg.attack.knowledge == "omniscient"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("collude", [False, True])
def test_craft_shape_dtype_no_mutation_determinism(name, collude, build_attack, make_context) -> None:
    attack = build_attack(name, collude=collude)
    honest = attack.knowledge.level >= Knowledge.OMNISCIENT.level
    ctx = make_context(m=3, k=7, d=12, honest=honest, previous=True)
    snapshot = {k: v.clone() for k, v in vars(ctx).items() if isinstance(v, torch.Tensor)}
    out = attack.craft(ctx)
    assert out.shape == (3, 12)
    assert out.dtype == torch.float32
    assert out.device == ctx.own_updates.device
    for key, before in snapshot.items():
        assert torch.equal(getattr(ctx, key), before), f"craft mutated ctx.{key}"
    again = build_attack(name, collude=collude).craft(make_context(m=3, k=7, d=12, honest=honest, previous=True))
    torch.testing.assert_close(out, again, equal_nan=True, rtol=0, atol=0)
    if name != "nonfinite":
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_craft_handles_one_attacker_and_all_attackers(name, build_attack, make_context) -> None:
    attack = build_attack(name)
    honest = attack.knowledge.level >= Knowledge.OMNISCIENT.level
    assert attack.craft(make_context(m=1, k=5, d=6, honest=honest)).shape == (1, 6)
    # Every participant malicious: honest rows visible but empty.
    ctx = make_context(m=4, k=0, d=6, honest=honest)
    assert attack.craft(ctx).shape == (4, 6)


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS.get(n).obj.knowledge == Knowledge.LOCAL])
def test_local_attacks_never_need_honest_updates(name, build_attack, make_context) -> None:
    out = build_attack(name).craft(make_context(honest=False))
    assert out.shape == (3, 12)


@pytest.mark.parametrize("name", NAMES)
def test_poison_shapes_no_mutation_determinism(name, build_attack, make_data) -> None:
    attack = build_attack(name)
    x, y = make_data(40)
    x0, y0 = x.clone(), y.clone()
    xp, yp = attack.poison(x, y, client_id=5, slot=1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(x, x0) and torch.equal(y, y0), "poison mutated its inputs"
    # Same inputs, or (poison_mode: append) the clean samples followed by poisoned copies.
    assert xp.shape[1:] == x.shape[1:] and xp.dtype == x.dtype
    assert yp.shape == (xp.shape[0],) and yp.dtype == torch.int64
    assert xp.shape[0] >= x.shape[0]
    if xp.shape[0] > x.shape[0]:
        assert torch.equal(xp[: len(x)], x) and torch.equal(yp[: len(y)], y)
    assert int(yp.min()) >= 0 and int(yp.max()) < 10
    xq, yq = build_attack(name).poison(x, y, client_id=5, slot=1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(xp, xq) and torch.equal(yp, yq)
    if attack.kind == AttackKind.UPDATE:
        assert torch.equal(xp, x) and torch.equal(yp, y), "update attacks leave data alone"


@pytest.mark.parametrize("name", NAMES)
def test_backdoor_and_targets(name, build_attack, make_data) -> None:
    attack = build_attack(name)
    x, _ = make_data(10)
    x0 = x.clone()
    triggered = attack.backdoor(x)
    assert torch.equal(x, x0)
    if triggered is not None:
        assert triggered.shape == x.shape and triggered.dtype == x.dtype
        assert not torch.equal(triggered, x)
        assert attack.target_class is not None
    if attack.source_classes is not None:
        assert attack.target_class is not None
        assert attack.target_class not in attack.source_classes


@pytest.mark.parametrize("name", NAMES)
def test_update_attacks_craft_something_else_than_the_honest_update(name, build_attack, make_context) -> None:
    attack = build_attack(name)
    if attack.kind == AttackKind.DATA or name == "dba":
        pytest.skip("data attacks (and DBA at its default scale 1) send their trained update as is")
    honest = attack.knowledge.level >= Knowledge.OMNISCIENT.level
    ctx = make_context(honest=honest)
    assert not torch.equal(attack.craft(ctx), ctx.own_updates)


DOC = Path(__file__).resolve().parents[2] / "docs" / "attacks.md"


@pytest.mark.parametrize("name", NAMES)
def test_docs_describe_every_attack_and_every_key(name: str) -> None:
    text = DOC.read_text()
    assert f"### `{name}`" in text or f"`{name}` and" in text or f"and `{name}`" in text
    for key in ATTACKS.get(name).params.model_fields:
        assert f"`{key}`" in text, f"docs/attacks.md does not mention attack.{key} of {name}"
