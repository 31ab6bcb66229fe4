"""Hand-checkable cases of the data attacks: label maps, trigger stamping, DBA pieces."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

import fedpoison
from fedpoison.attacks.backdoor import (
    blended_trigger,
    dba_pieces,
    poison_with_trigger,
    square_trigger,
    stamp,
    union_trigger,
)
from fedpoison.attacks.label_flip import flip_labels, label_map
from fedpoison.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- label flipping -------------------------------------------------------------
def test_label_maps_of_the_four_modes() -> None:
    assert label_map("reverse", 4).tolist() == [3, 2, 1, 0]
    assert label_map("all_to_one", 4, target_class=2).tolist() == [2, 2, 2, 2]
    assert label_map("source_target", 4, target_class=0, source_classes=(1, 3)).tolist() == [0, 0, 2, 0]
    perm = torch.tensor([1, 2, 3, 0])
    assert label_map("permutation", 4, permutation=perm).tolist() == [1, 2, 3, 0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"mode": "reverse"}, [3, 2, 1, 0]),
        ({"mode": "all_to_one", "target_class": 2}, [2, 2, 2, 2]),
        ({"mode": "source_target", "target_class": 0, "source_classes": [1, 3]}, [0, 0, 2, 0]),
        ({"mode": "permutation", "permutation": [1, 2, 3, 0]}, [1, 2, 3, 0]),
    ],
)
def test_label_flip_attack_applies_the_map_to_every_sample(build_attack, params, expected) -> None:
    attack = build_attack("label_flip", num_classes=4, poison_fraction=1.0, **params)
    x = torch.rand(8, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    xp, yp = attack.poison(x, y, client_id=0, slot=0, generator=gen())
    assert xp is x or torch.equal(xp, x)
    assert yp.tolist() == expected * 2
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_label_flip_targets_and_sources(build_attack) -> None:
    st = build_attack("label_flip", mode="source_target", target_class=7, source_classes=[1, 2])
    assert st.target_class == 7 and st.source_classes == (1, 2)
    a2o = build_attack("label_flip", mode="all_to_one", target_class=3, num_classes=5)
    assert a2o.target_class == 3 and a2o.source_classes == (0, 1, 2, 4)
    rev = build_attack("label_flip", mode="reverse")
    assert rev.target_class is None and rev.source_classes is None


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_poison_fraction_changes_exactly_that_share_of_eligible_samples(fraction) -> None:
    y = torch.arange(40) % 4  # 10 per class
    mapping = label_map("source_target", 4, target_class=0, source_classes=(1, 2))  # 20 eligible
    out = flip_labels(y, mapping, fraction=fraction, generator=gen(3))
    changed = out != y
    assert int(changed.sum()) == round(fraction * 20)
    assert set(y[changed].tolist()) <= {1, 2}
    assert (out[changed] == 0).all()


def test_reverse_with_odd_classes_leaves_the_middle_class_alone() -> None:
    y = torch.arange(30) % 3
    out = flip_labels(y, label_map("reverse", 3), fraction=0.5, generator=gen())
    assert (out[y == 1] == 1).all()
    assert int((out != y).sum()) == 10  # half of the 20 eligible (classes 0 and 2)


def test_random_permutation_is_per_client_and_seeded(build_attack) -> None:
    attack = build_attack("label_flip", mode="permutation")
    p1, p2 = attack.mapping(gen(1)), attack.mapping(gen(1))
    assert torch.equal(p1, p2)
    assert sorted(p1.tolist()) == list(range(10))
    others = {tuple(attack.mapping(gen(s)).tolist()) for s in range(5)}
    assert len(others) > 1


def test_label_flip_rejects_bad_settings(build_attack) -> None:
    with pytest.raises(ValidationError, match="source_classes"):
        build_attack("label_flip", mode="source_target")
    with pytest.raises(ValidationError, match="permutation"):
        build_attack("label_flip", mode="reverse", permutation=[0, 1])
    with pytest.raises(ConfigError, match=r"attack.target_class: expected a class in \[0, 10\), got 12"):
        build_attack("label_flip", mode="all_to_one", target_class=12)
    with pytest.raises(ConfigError, match=re.escape("attack.permutation")):
        build_attack("label_flip", mode="permutation", permutation=[0, 1, 2])
    with pytest.raises(ConfigError, match=re.escape("attack.source_classes")):
        fedpoison.load_config(overrides=["attack.name=label_flip", "attack.mode=source_target"])


# ---- BadNets / blended triggers --------------------------------------------------
def test_pixel_trigger_is_a_checkerboard_in_the_bottom_right_corner() -> None:
    t = square_trigger("pixel", (1, 8, 8), size=3, location="bottom_right", value=0.7)
    out = stamp(torch.zeros(2, 1, 8, 8), t)
    on = {(r, c) for r in range(8) for c in range(8) if out[0, 0, r, c] != 0}
    assert on == {(5, 5), (5, 7), (6, 6), (7, 5), (7, 7)}
    assert torch.allclose(out[:, 0, 5, 5], torch.tensor(0.7))
    single = square_trigger("pixel", (1, 8, 8), size=1, location=(2, 3), value=1.0)
    assert torch.nonzero(single.mask).tolist() == [[0, 2, 3]]


def test_patch_trigger_overwrites_a_square_and_nothing_else() -> None:
    x = torch.rand(4, 3, 8, 8)
    t = square_trigger("patch", (3, 8, 8), size=2, location="top_left", value=0.5)
    out = stamp(x, t)
    assert (out[:, :, :2, :2] == 0.5).all()  # every channel
    rest = torch.ones(8, 8, dtype=torch.bool)
    rest[:2, :2] = False
    assert torch.equal(out[:, :, rest], x[:, :, rest])
    centre = square_trigger("patch", (1, 8, 8), size=2, location="center", value=1.0)
    assert torch.nonzero(centre.mask[0]).tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]


def test_trigger_on_vector_inputs_is_a_strip_at_the_end() -> None:
    t = square_trigger("patch", (10,), size=3, location="bottom_right", value=2.0)
    assert t.mask.tolist() == [False] * 7 + [True] * 3


def test_trigger_that_does_not_fit_is_a_config_error(build_attack) -> None:
    with pytest.raises(ConfigError, match=re.escape("attack.trigger_location")):
        square_trigger("patch", (1, 8, 8), size=3, location=(6, 6), value=1.0)
    with pytest.raises(ConfigError, match=re.escape("attack.trigger_location")):
        build_attack("backdoor", trigger_size=9)


def test_blended_trigger_mixes_a_fixed_key_pattern() -> None:
    x = torch.rand(3, 1, 8, 8)
    t = blended_trigger((1, 8, 8), alpha=0.2, value=1.0, pattern_seed=5)
    torch.testing.assert_close(stamp(x, t), 0.8 * x + 0.2 * t.pattern)
    assert torch.equal(t.pattern, blended_trigger((1, 8, 8), alpha=0.2, value=1.0, pattern_seed=5).pattern)
    assert not torch.equal(t.pattern, blended_trigger((1, 8, 8), alpha=0.2, value=1.0, pattern_seed=6).pattern)


@pytest.mark.parametrize("append", [False, True])
def test_poisoning_triggers_and_relabels_exactly_the_fraction(append) -> None:
    x, y = torch.rand(20, 1, 8, 8) * 0.5, torch.arange(20) % 10
    t = square_trigger("patch", (1, 8, 8), size=2, location="bottom_right", value=1.0)
    xp, yp = poison_with_trigger(x, y, t, target_class=4, fraction=0.25, generator=gen(), append=append)
    triggered = (xp[:, 0, 6:, 6:] == 1.0).flatten(1).all(dim=1)
    assert int(triggered.sum()) == 5
    assert (yp[triggered] == 4).all()
    if append:
        assert len(xp) == 25 and torch.equal(xp[:20], x) and torch.equal(yp[:20], y)
        assert triggered[20:].all()
    else:
        assert len(xp) == 20
        assert torch.equal(xp[~triggered], x[~triggered]) and torch.equal(yp[~triggered], y[~triggered])


def test_backdoor_attack_stamps_test_inputs_with_its_trigger(build_attack) -> None:
    attack = build_attack("backdoor", trigger="patch", trigger_size=2, trigger_value=1.0, target_class=3)
    out = attack.backdoor(torch.zeros(2, 1, 8, 8))
    assert (out[:, 0, 6:, 6:] == 1).all() and out.sum() == 8
    assert attack.target_class == 3 and attack.source_classes is None


# ---- DBA ---------------------------------------------------------------------------
def test_dba_pieces_tile_the_global_trigger() -> None:
    pieces = dba_pieces((1, 8, 8), pieces=4, size=2, gap=1, location="top_left", value=1.0)
    cells = [sorted(map(tuple, torch.nonzero(p.mask[0]).tolist())) for p in pieces]
    assert cells == [[(0, 0), (0, 1)], [(0, 3), (0, 4)], [(2, 0), (2, 1)], [(2, 3), (2, 4)]]
    union = union_trigger(pieces)
    assert torch.equal(union.mask, torch.stack([p.mask for p in pieces]).any(dim=0))
    assert int(union.mask.sum()) == sum(int(p.mask.sum()) for p in pieces)  # disjoint


def test_dba_slot_gets_its_own_piece_and_the_test_trigger_is_the_union(build_attack) -> None:
    attack = build_attack("dba", poison_fraction=1.0, target_class=2)
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    for slot in range(6):
        xp, yp = attack.poison(x, y, client_id=9, slot=slot, generator=gen())
        piece = attack.pieces[slot % 4]
        assert torch.equal(xp[0] != 0, piece.mask)
        assert (yp == 2).all()
    global_mask = attack.backdoor(x)[0] != 0
    assert torch.equal(global_mask, union_trigger(attack.pieces).mask)
    assert int(global_mask.sum()) == 8


def test_dba_scales_its_update(build_attack, make_context) -> None:
    ctx = make_context()
    torch.testing.assert_close(build_attack("dba", scale=5.0).craft(ctx), 5.0 * ctx.own_updates)
