"""Registry, config and docs facts of every registered attack.

The per-attack contract (``craft`` and ``poison`` shapes, no mutation,
determinism, triggers) is :mod:`fedpoison.testing`'s, run in
``tests/plugins/test_contracts.py``. Here: the registry holds the documented
names and facts, params and configs reject unknown keys, the threat model is
enforced, and the docs describe every attack.
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

NAMES = ATTACKS.names()
DOC = Path(__file__).resolve().parents[2] / "docs" / "attacks.md"


def test_registry_holds_exactly_the_documented_names() -> None:
    """Every attack module registers what docs/attacks.md documents under its ``###`` headings, and only that."""
    headings = re.findall(r"^### (.+)$", DOC.read_text(), flags=re.M)
    documented = {name for heading in headings for name in re.findall(r"`([a-z_0-9]+)`", heading)}
    assert set(NAMES) == documented


@pytest.mark.parametrize("name", NAMES)
def test_registry_meta_matches_class_and_cites_a_paper(name: str) -> None:
    entry = ATTACKS.get(name)
    cls = entry.obj
    assert isinstance(cls.kind, AttackKind) and isinstance(cls.knowledge, Knowledge)
    assert entry.meta["kind"] == cls.kind.value
    assert entry.meta["knowledge"] == cls.knowledge.value
    assert entry.meta["trains"] is cls.trains
    assert entry.description and entry.reference
    if not entry.has("sends_nonfinite"):  # a fault-injection probe, not from a paper
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


@pytest.mark.parametrize("name", [n for n in NAMES if ATTACKS.get(n).obj.knowledge == Knowledge.LOCAL])
def test_local_attacks_never_need_honest_updates(name, build_attack, make_context) -> None:
    out = build_attack(name).craft(make_context(honest=False))
    assert out.shape == (3, 12)


@pytest.mark.parametrize("name", NAMES)
def test_update_attacks_craft_something_else_than_the_honest_update(name, build_attack, make_context) -> None:
    attack = build_attack(name)
    if attack.kind == AttackKind.DATA or ATTACKS.get(name).params().model_dump().get("scale") == 1.0:
        pytest.skip("data attacks (and backdoors at scale 1) send their trained update as is")
    if attack.owns_training:
        pytest.skip("attacks that train themselves shape the update in train(), tested in test_attack_trained.py")
    honest = attack.knowledge.level >= Knowledge.OMNISCIENT.level
    ctx = make_context(honest=honest)
    assert not torch.equal(attack.craft(ctx), ctx.own_updates)



@pytest.mark.parametrize("name", NAMES)
def test_docs_describe_every_attack_and_every_key(name: str) -> None:
    text = DOC.read_text()
    assert f"### `{name}`" in text or f"`{name}` and" in text or f"and `{name}`" in text
    for key in ATTACKS.get(name).params.model_fields:
        assert f"`{key}`" in text, f"docs/attacks.md does not mention attack.{key} of {name}"
