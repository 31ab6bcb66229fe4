"""The public contract checks of :mod:`fedpoison.testing`, run over every registered plug-in.

One test per plug-in and check, so a failure names both. The checks read tags,
never names: a plug-in that needs an exception declares it in its registration.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedpoison import testing
from fedpoison.plugins import registries

REGS = registries()
MODEL_SHAPES = {"cnn28": (1, 28, 28), "fang_dnn": (1, 28, 28), "resnet8": (3, 32, 32)}


def _cases(family: str, make: Callable[..., list[tuple[str, Callable[[], None]]]]) -> list[object]:
    return [pytest.param(check, id=f"{entry.name}-{name}")
            for entry in REGS[family] for name, check in make(entry)]


@pytest.mark.parametrize("check", _cases("defenses", testing.rule_checks))
def test_rule_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("check", _cases("pre-aggregators", testing.pre_aggregator_checks))
def test_pre_aggregator_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("check", _cases("attacks", testing.attack_checks))
def test_attack_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("check", _cases("auditors", testing.auditor_checks))
def test_auditor_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("check", _cases("partitions", testing.partition_checks))
def test_partition_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize(
    "check",
    _cases("models", lambda e: testing.model_checks(e, input_shape=MODEL_SHAPES.get(e.name, (1, 8, 8)))),
)
def test_model_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("check", [pytest.param(c, id=f"{e.name}-{n}") for e in REGS["datasets"]
                                   if e.name in {"digits", "synthetic"} for n, c in testing.dataset_checks(e)])
def test_bundled_dataset_contract(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("family", sorted(REGS))
def test_every_plugin_declares_what_list_shows(family: str) -> None:
    for entry in REGS[family]:
        assert entry.description, f"{family} '{entry.name}' has no description"
        assert entry.params.model_config.get("extra") == "forbid"
        if family in {"attacks", "defenses", "pre-aggregators", "auditors"} and entry.name != "nonfinite":
            assert entry.reference, f"{family} '{entry.name}' cites no paper"
