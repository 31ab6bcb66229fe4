"""``attack.fake_clients``: the threat model, the round loop, the audit log, metrics and checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
import torch
from torch import Tensor

import fedpoison
from fedpoison.attacks import ATTACKS, Attack, AttackContext, AttackKind, Knowledge, register_attack
from fedpoison.attacks.params import AttackParams
from fedpoison.errors import ConfigError
from fedpoison.metrics.detection import detection_summary, fake_client_detection
from fedpoison.simulation.checkpoint import run_with_checkpoints
from fedpoison.simulation.federation import build_federation
from fedpoison.simulation.loop import LoopState, drive

TINY = ["dataset.name=digits", "model.name=logreg", "clients.num=6", "rounds=3", "local.epochs=1",
        "local.engine=sequential", "defense.name=mean"]


class _RecordParams(AttackParams):
    pass


class _Record(Attack):
    """Trains (genuine attackers do) and sends its own rows; records the contexts."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL
    seen: ClassVar[list[AttackContext]] = []

    def craft(self, ctx: AttackContext) -> Tensor:
        type(self).seen.append(ctx)
        return ctx.own_updates.clone()


@pytest.fixture
def recording_attack() -> Iterator[type[_Record]]:
    """``_test_record_fakes`` registered for one test only."""
    register_attack("_test_record_fakes", description="records what craft sees", params=_RecordParams,
                    reference="test", tags=("fake_clients",))(_Record)
    _Record.seen = []
    yield _Record
    ATTACKS.unregister("_test_record_fakes")


def test_config_counts_fake_clients_in_the_population_and_in_f() -> None:
    cfg = fedpoison.load_config(overrides=[*TINY, "attack.name=mpaf", "attack.fake_clients=2", "attack.count=1"])
    assert cfg.population == 8 and cfg.participants_per_round == 8
    assert cfg.num_malicious == 1 and cfg.num_attackers == 3
    assert cfg.expected_malicious_per_round == 3 and cfg.assumed_f == 3
    half = fedpoison.load_config(overrides=[*TINY, "attack.name=mpaf", "attack.fake_clients=4",
                                            "clients.fraction=0.5"])
    assert half.participants_per_round == 5  # half of 6 + 4
    assert half.expected_malicious_per_round == 2  # round(4 * 5 / 10)


@pytest.mark.parametrize(("overrides", "needle"), [
    (["attack.name=sign_flip", "attack.fraction=0.2", "attack.fake_clients=2"],
     "attack.fake_clients: expected 0 for attack 'sign_flip', which needs its clients' data"),
    (["attack.name=mpaf", "attack.fake_clients=-1"], "attack.fake_clients"),
    (["attack.name=mpaf", "attack.fake_clients=2", "clients.per_round=9"],
     "clients.per_round: expected at most clients.num=6 + attack.fake_clients=2, got 9"),
])
def test_bad_fake_client_settings_are_one_clear_error(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        fedpoison.load_config(overrides=[*TINY, *overrides])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_fake_clients_without_an_attack_warn_that_they_do_nothing() -> None:
    from fedpoison.config_noops import ConfigWarning, check_run_config

    cfg = fedpoison.load_config(overrides=[*TINY, "attack.fake_clients=2"])
    assert cfg.population == 6 and cfg.num_attackers == 0
    with pytest.warns(ConfigWarning, match="attack.fake_clients=2 has no effect: attack.name is none"):
        check_run_config(cfg)


def test_fake_client_only_attack_is_not_an_attack_without_attackers() -> None:
    cfg = fedpoison.load_config(overrides=[*TINY, "attack.name=mpaf", "attack.fake_clients=1", "rounds=1"])
    result = fedpoison.run(cfg)  # attack.fraction 0: the fake client is the only attacker, not an error
    assert result.history.loc[0, "fake_participants"] == 1


def test_fake_rows_are_not_trained_on_any_clients_data(monkeypatch: pytest.MonkeyPatch,
                                                       recording_attack: type[_Record]) -> None:
    cfg = fedpoison.load_config(overrides=[*TINY, "attack.name=_test_record_fakes", "attack.fake_clients=2",
                                           "attack.count=1"])
    fed = build_federation(cfg)
    trained: list[int] = []
    train = fed.engine.train

    def spy(params: Tensor, jobs: list[Any]) -> Any:
        trained.extend(j.client_id for j in jobs)
        return train(params, jobs)

    monkeypatch.setattr(fed.engine, "train", spy)
    drive(fed, LoopState(params=fed.init_params.clone()))
    assert trained and max(trained) < cfg.clients.num  # the engine never trained a fake id
    assert set(range(6, 8)).isdisjoint(trained)
    assert len(recording_attack.seen) == 3
    for ctx in recording_attack.seen:
        assert ctx.own_fake is not None and ctx.own_fake.tolist() == [False, True, True]
        assert torch.count_nonzero(ctx.own_updates[1:]) == 0  # fake rows: nothing trained
        assert torch.count_nonzero(ctx.own_updates[0]) > 0  # the compromised genuine client trained
        assert ctx.own_weights[1:].tolist() == [float(fed.sizes[6])] * 2
    assert float(fed.sizes[6]) == round(len(fed.data.y_train) / 6)


def test_fake_rows_are_malicious_ground_truth_in_the_log_and_the_detection_metrics() -> None:
    result = fedpoison.run(overrides=[*TINY, "attack.name=mpaf", "attack.fake_clients=2", "attack.scale=100",
                                      "audit.name=norm_mad", "audit.policy=flag"])
    log = result.clients
    fake = log[log["client"] >= 6]
    assert len(fake) == 6 and fake["fake"].all() and fake["malicious"].all() and fake["attacked"].all()
    assert not log[log["client"] < 6]["fake"].any()
    s = detection_summary(log)
    assert s["detection_tp"] + s["detection_fn"] == 6  # every fake row is a positive
    assert s["detection_recall"] == 1.0 and s["detection_fp"] == 0  # lambda=100 rows are norm outliers
    assert result.summary["num_malicious"] == 2 and result.summary["num_fake_clients"] == 2
    assert result.summary["detection_fake_rows"] == 6 and result.summary["detection_recall_fake"] == 1.0


def test_detection_recall_is_split_between_fake_and_compromised_rows() -> None:
    log = pd.DataFrame({
        "round": [0] * 6, "client": [0, 1, 2, 3, 6, 7],
        "malicious": [False, False, True, True, True, True], "attacked": [False, False, True, True, True, True],
        "fake": [False, False, False, False, True, True], "selected": [True] * 6,
        "flagged": [True, False, True, False, True, True], "kept": [True] * 6,
    })
    s = detection_summary(log) | fake_client_detection(log)
    assert (s["detection_tp"], s["detection_fn"], s["detection_fp"]) == (3, 1, 1)
    assert s["detection_recall_fake"] == 1.0 and s["detection_recall_compromised"] == 0.5
    assert s["detection_fake_rows"] == 2
    assert fake_client_detection(log.drop(columns="fake")) == {}


def test_fake_clients_send_nothing_outside_the_schedule() -> None:
    result = fedpoison.run(overrides=[*TINY, "rounds=4", "attack.name=mpaf", "attack.fake_clients=2",
                                      "attack.start_round=2"])
    h = result.history
    assert h["participants"].tolist() == [6, 6, 8, 8]
    assert h["fake_participants"].tolist() == [0, 0, 2, 2]


def test_fake_clients_are_sampled_like_genuine_ones_and_runs_are_bit_reproducible() -> None:
    over = [*TINY, "rounds=4", "attack.name=mpaf", "attack.fake_clients=3", "clients.per_round=4",
            "attack.scale=10"]
    a, b = fedpoison.run(overrides=over), fedpoison.run(overrides=over)
    assert torch.equal(a.final_params, b.final_params)
    pd.testing.assert_frame_equal(a.clients, b.clients)
    assert (a.history["participants"] == 4).all()
    assert a.history["fake_participants"].between(0, 3).all() and a.history["fake_participants"].nunique() > 1


def test_resumed_run_with_a_stateful_fake_client_attack_matches_the_uninterrupted_one(tmp_path: Path) -> None:
    cfg = fedpoison.load_config(overrides=[*TINY, "rounds=5", "attack.name=poisoned_fl", "attack.fake_clients=2",
                                           "attack.check_every=2"])
    whole = fedpoison.run(cfg)

    class Crash(Exception):
        pass

    def crash_after_round_2(record: dict[str, Any]) -> None:
        if record["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_with_checkpoints(cfg, out=tmp_path, every=1, progress=crash_after_round_2)
    resumed = run_with_checkpoints(cfg, out=tmp_path, every=1, resume=True)
    assert torch.equal(resumed.final_params, whole.final_params)
    pd.testing.assert_frame_equal(resumed.clients.reset_index(drop=True), whole.clients.reset_index(drop=True),
                                  check_dtype=False)


def test_cli_refuses_fake_clients_for_a_data_attack_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from fedpoison.cli import main

    assert main(["run", "--set", "attack.name=backdoor", "--set", "attack.fraction=0.2",
                 "--set", "attack.fake_clients=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "attack.fake_clients: expected 0 for attack 'backdoor'" in err and "got 3" in err


def test_flower_deployments_refuse_fake_clients() -> None:
    pytest.importorskip("flwr")
    from fedpoison.integrations.flower.malicious import check_deployable

    assert check_deployable({"name": "mpaf"}).name == "mpaf"
    with pytest.raises(ConfigError, match=r"attack\.fake_clients: expected 0 in a Flower deployment, got 2"):
        check_deployable({"name": "mpaf", "fake_clients": 2})
