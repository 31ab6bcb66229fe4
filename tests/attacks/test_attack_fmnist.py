"""Issue 3's Fashion-MNIST acceptance checks with the 28x28 CNN (slow).

Setting (Fang et al. 2020's threat model, shrunk to fit a 2-core CPU): Fashion-MNIST,
first 6,000 training images, 20 clients on Fang's group-bias split (bias 0.5), cnn28,
1 local epoch, 8 rounds, 20% malicious, full knowledge. Each run takes about 30 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import fedpoison

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(),
                       reason="apt-get install dataset-fashion-mnist"),
]

BASE = ["dataset.name=fashion-mnist", "dataset.limit=6000", "clients.num=20", "partition.name=fang",
        "partition.bias=0.5", "rounds=8", "local.epochs=1"]


def _final(rule: str, attack: str | None) -> float:
    over = [*BASE, f"defense.name={rule}", "defense.f=4"]
    if attack is not None:
        over += [f"attack.name={attack}", "attack.fraction=0.2", "attack.knowledge=omniscient"]
    return float(fedpoison.run(overrides=over).summary["final_accuracy"])


def test_fang_krum_attack_makes_krum_fail_at_20_percent() -> None:
    clean = _final("krum", None)
    attacked = _final("krum", "fang_krum")
    assert clean > 0.5
    assert attacked <= 0.15, f"Krum under the Fang Krum attack: {attacked:.3f} (chance is 0.10)"


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_fang_trim_attack_raises_the_error_of_median_and_trimmed_mean(rule: str) -> None:
    clean_error = 1 - _final(rule, None)
    attacked_error = 1 - _final(rule, "fang_trim")
    # measured: median 0.284 -> 0.357, trimmed mean 0.281 -> 0.413 (seed 0)
    assert attacked_error >= clean_error + 0.05, (rule, clean_error, attacked_error)
