"""Make a Flower ClientApp malicious with a fedpoison attack.

:class:`MaliciousClient` carries one configured attack and decides, from the
node's ``node_config["partition-id"]``, whether the node running it is one of
the attackers. It has two hooks, matching fedpoison's two kinds of attack:

- **data** (``label_flip``, ``backdoor``, the data half of ``dba``,
  ``model_replacement``, ``norm_bounded``): :meth:`MaliciousClient.poison`
  returns poisoned copies of the node's training data; call it in the
  ClientApp's train function before training.
- **update** (``sign_flip``, ``scaling``, ``gaussian``, ``free_rider``,
  ``nonfinite``, the update half of the above): the object is a Flower *mod*
  (``Mod = (Message, Context, call_next) -> Message``). Put it in
  ``@app.train(mods=[attacker])`` or ``ClientApp(mods=[attacker])``: it lets
  the train function run, takes the update the node trained (its reply minus
  the global model it received) and replaces the reply's arrays by what the
  attack crafts from it.

Both hooks are the identity on honest nodes and in rounds where the attack's
schedule (``attack.start_round``, ``end_round``, ``every``, ``probability``,
with rounds counted from 0 as in fedpoison, i.e. Flower's round minus 1) does
not fire, so every node can run the same ClientApp.

What a deployed attacker cannot do
----------------------------------
A Flower client sees the global model, its own data and its own update,
nothing else. Attacks that need more are *simulation-only* and are refused
here with a :class:`~fedpoison.errors.ConfigError` (see :func:`check_deployable`):

- attacks whose threat model is ``omniscient`` or ``defense_aware`` (ALIE,
  IPM, Min-Max, Min-Sum, mimic): they are computed from this round's honest
  updates, which only the server (or fedpoison's simulator) holds;
- Fang et al.'s attacks (``fang_krum``, ``fang_trim``): even their
  partial-knowledge variant pools the benign updates of all attackers of the
  round, which would need a side channel between the malicious nodes;
- ``attack.collude`` (one jointly crafted row) for the same reason, and
  ``attack.always_participate``, because in Flower the server samples nodes.

Faking these (e.g. letting a node read other nodes' updates from disk) would
measure a threat model no deployment has, so fedpoison does not offer it.
Run them with ``fedpoison run``, where the simulator hands the attacker what
its threat model allows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from torch import Tensor

from fedpoison.attacks import ATTACKS, Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.threat import attack_active, check_crafted, choose_malicious, malicious_count
from fedpoison.config import AttackSection
from fedpoison.errors import ConfigError, UpdateError
from fedpoison.integrations.flower.config import attack_section
from fedpoison.integrations.flower.records import ArrayLayout, ReplyKind
from fedpoison.seeding import generator

#: Attacks registered with ``local`` knowledge that still cannot run on one Flower node, and why.
SIMULATION_ONLY_LOCAL: dict[str, str] = {
    "fang_krum": (
        "its partial-knowledge variant estimates the benign direction from the updates of all "
        "attackers of the round, and a Flower node sees only its own"
    ),
    "fang_trim": (
        "its partial-knowledge variant draws from the mean and spread of the updates of all "
        "attackers of the round (one row has no spread), and a Flower node sees only its own"
    ),
    "three_dfed": (
        "it reads last round's indicators back from the global model and keeps its decoy count and noise "
        "level across rounds, and the Flower adapter carries only a node's last row from one round to the next"
    ),
    "poisoned_fl": (
        "it remembers the global models it saw and the rows it sent across rounds, and the Flower adapter "
        "carries only a node's last row from one round to the next"
    ),
}

_STATE_KEY = "fedpoison.attack"
_PARTITION_KEY = "partition-id"
_NUM_PARTITIONS_KEY = "num-partitions"


def check_deployable(section: AttackSection | Mapping[str, Any]) -> AttackSection:
    """Return the validated section, or raise :class:`ConfigError` if it cannot run inside a Flower client.

    Example
    -------
    >>> check_deployable({"name": "alie"})
    Traceback (most recent call last):
    ...
    fedpoison.errors.ConfigError: attack.name: 'alie' is simulation-only: ...
    """
    sec = attack_section(section)
    if sec.name == "none":
        return sec
    entry = ATTACKS.get(sec.name, key="attack.name")
    need = Knowledge(entry.meta.get("knowledge", "local"))
    run_it = f"run it with fedpoison's simulator instead (fedpoison run --set attack.name={sec.name})"
    if need is not Knowledge.LOCAL:
        sees = "this round's honest updates" + (" and the server's defense" if need is Knowledge.DEFENSE_AWARE else "")
        raise ConfigError(
            f"attack.name: '{sec.name}' is simulation-only: it needs {need.value} knowledge ({sees}), "
            f"which a Flower client never receives; {run_it}"
        )
    if entry.meta.get("owns_training", False):
        raise ConfigError(
            f"attack.name: '{sec.name}' is simulation-only: it runs its clients' local training itself "
            f"(masked, projected or jointly optimised), and a Flower node trains with the app's own loop; {run_it}"
        )
    if sec.name in SIMULATION_ONLY_LOCAL:
        raise ConfigError(f"attack.name: '{sec.name}' is simulation-only: {SIMULATION_ONLY_LOCAL[sec.name]}; {run_it}")
    if sec.knowledge != Knowledge.LOCAL.value:
        raise ConfigError(
            f"attack.knowledge: expected 'local' for an attacker inside a Flower client (it sees only its "
            f"own data and update), got {sec.knowledge!r}; {run_it}"
        )
    if sec.collude:
        raise ConfigError(
            "attack.collude: expected false in a Flower deployment: colluding attackers send one jointly "
            f"crafted row, which needs a channel between the malicious nodes; {run_it}"
        )
    if sec.always_participate:
        raise ConfigError(
            "attack.always_participate: expected false in a Flower deployment: the server's strategy "
            "samples the nodes, an attacker cannot make itself sampled"
        )
    if sec.fake_clients:
        raise ConfigError(
            f"attack.fake_clients: expected 0 in a Flower deployment, got {sec.fake_clients}: fake clients are "
            "a simulation feature (fedpoison does not start Flower nodes)"
        )
    return sec


class MaliciousClient:
    """A fedpoison attack for the malicious nodes of a Flower app; also a Flower mod.

    Parameters
    ----------
    attack:
        The attack section (``{"name": "sign_flip", "scale": 2.0, "count": 3}``)
        or an :class:`~fedpoison.config.AttackSection`. Checked by
        :func:`check_deployable`.
    num_classes, input_shape:
        The task's, as for building any fedpoison attack.
    partitions:
        Partition ids (``node_config["partition-id"]``) of the malicious nodes.
        By default they are drawn by fedpoison's own rule
        (:func:`fedpoison.attacks.threat.choose_malicious`): ``attack.count``
        (or ``round(attack.fraction * N)``) of the
        ``N = node_config["num-partitions"]`` partitions, by a permutation seeded
        with ``seed``. The same seed therefore makes the same clients malicious
        in ``fedpoison run`` and in the Flower app.
    seed:
        Seeds the data poisoning, the attack's draws and the schedule.
    num_participants:
        The attacker's belief about how many replies the server aggregates
        (used by ``model_replacement``'s default scale). Default: the node's
        ``num-partitions`` (every node sampled every round).
    server_lr:
        The attacker's belief about the server learning rate.
    reply:
        What the ClientApp's train reply carries: ``params`` (trained model) or
        ``update``; must match the server's strategy.
    arrayrecord_key:
        Key of the ArrayRecord in the train message and reply (one record is also accepted).
    weighted_by_key:
        Metric holding the node's sample count (the attacker's own weight).
    """

    def __init__(
        self,
        attack: AttackSection | Mapping[str, Any],
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        partitions: Collection[int] | None = None,
        seed: int = 0,
        num_participants: int | None = None,
        server_lr: float = 1.0,
        reply: ReplyKind = "params",
        arrayrecord_key: str = "arrays",
        weighted_by_key: str = "num-examples",
    ) -> None:
        self.section = check_deployable(attack)
        if self.section.name == "none":
            raise ConfigError("attack.name: expected an attack for a MaliciousClient, got 'none'")
        if reply not in ("params", "update"):
            raise ConfigError(f"reply: expected 'params' or 'update', got {reply!r}")
        if num_participants is not None and num_participants < 1:
            raise ConfigError(f"num_participants: expected a positive integer or None, got {num_participants!r}")
        if not server_lr > 0:
            raise ConfigError(f"server_lr: expected a positive number, got {server_lr!r}")
        if partitions is not None:
            bad = [p for p in partitions if not isinstance(p, int) or isinstance(p, bool) or p < 0]
            if bad:
                raise ConfigError(f"partitions: expected non-negative partition ids, got {bad}")
        entry = ATTACKS.get(self.section.name, key="attack.name")
        self.attack: Attack = entry.obj(
            self.section.params(entry.params), num_classes=num_classes, input_shape=tuple(input_shape), collude=False
        )
        self.name = self.section.name
        self.kind = AttackKind(entry.meta.get("kind", AttackKind.UPDATE.value))
        self.trains = bool(entry.meta.get("trains", True))
        self.partitions = tuple(sorted(set(partitions))) if partitions is not None else None
        self.seed = seed
        self.num_participants = num_participants
        self.server_lr = float(server_lr)
        self.reply = reply
        self.arrayrecord_key = arrayrecord_key
        self.weighted_by_key = weighted_by_key

    # ---- who and when ------------------------------------------------------------
    def malicious_partitions(self, num_partitions: int) -> tuple[int, ...]:
        """The malicious partition ids among ``range(num_partitions)``."""
        if self.partitions is not None:
            return self.partitions
        m = malicious_count(self.section, num_partitions)
        if m > num_partitions:
            raise ConfigError(f"attack.count: expected at most {num_partitions} attackers (num-partitions), got {m}")
        return tuple(choose_malicious(num_partitions, m, self.seed).tolist())

    def partition_of(self, context: Context) -> int:
        """The partition id of the node running ``context``, from ``context.node_config``."""
        pid = context.node_config.get(_PARTITION_KEY)
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise ConfigError(
                f"node_config['{_PARTITION_KEY}']: expected an integer partition id to tell whether this node "
                f"is malicious, got {pid!r} (start the SuperNode with --node-config \"partition-id=K num-partitions=N\")"
            )
        return pid

    def _num_partitions(self, context: Context) -> int:
        n = context.node_config.get(_NUM_PARTITIONS_KEY)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
        if self.partitions is not None:
            return max(self.partitions, default=-1) + 1
        raise ConfigError(
            f"node_config['{_NUM_PARTITIONS_KEY}']: expected the number of partitions to draw the malicious "
            f"ones from, got {n!r} (or pass partitions=...)"
        )

    def is_malicious(self, context: Context) -> bool:
        """Whether the node running ``context`` is an attacker."""
        if self.partitions is not None:
            return self.partition_of(context) in self.partitions
        return self.partition_of(context) in self.malicious_partitions(self._num_partitions(context))

    def active(self, server_round: int) -> bool:
        """Whether the attack's schedule fires in Flower round ``server_round`` (fedpoison round ``server_round - 1``).

        :func:`fedpoison.attacks.threat.attack_active`, the round loop's own
        rule, with the same seeded draw for ``attack.probability``, so all
        attackers fire in the same rounds.
        """
        return attack_active(self.section, self.seed, server_round - 1)

    def _attacking(self, context: Context, server_round: int) -> bool:
        return self.is_malicious(context) and self.active(server_round)

    # ---- data hook -----------------------------------------------------------------
    def poison(self, x: Tensor, y: Tensor, *, context: Context, server_round: int) -> tuple[Tensor, Tensor]:
        """Poisoned copies of this node's training data when it attacks this round, else ``(x, y)``.

        ``x, y`` are the node's own samples. The poisoning is seeded by
        ``(seed, partition id)``, as in fedpoison's simulator. Inputs are not modified.
        """
        if self.kind is AttackKind.UPDATE or not self._attacking(context, server_round):
            return x, y
        pid = self.partition_of(context)
        slots = self.partitions or self.malicious_partitions(self._num_partitions(context))
        return self.attack.poison(
            x, y, client_id=pid, slot=slots.index(pid), generator=generator(self.seed, "poison", pid)
        )

    # ---- update hook -----------------------------------------------------------------
    def craft(
        self, global_arrays: ArrayRecord, reply_arrays: ArrayRecord, *, context: Context, server_round: int,
        num_examples: float,
    ) -> ArrayRecord:
        """The arrays to send instead of ``reply_arrays``, crafted from the update this node trained.

        ``global_arrays`` is the model the server sent this round. Returns
        ``reply_arrays`` unchanged on honest nodes, in rounds the schedule skips,
        and for pure data attacks.
        """
        if self.kind is AttackKind.DATA or not self._attacking(context, server_round):
            return reply_arrays
        layout = ArrayLayout.of(global_arrays)
        global_flat = layout.flatten(global_arrays, who="the global model")
        return self._craft_flat(layout, global_flat, reply_arrays, context, server_round, num_examples)

    def _craft_flat(
        self, layout: ArrayLayout, global_flat: Tensor, reply_arrays: ArrayRecord, context: Context,
        server_round: int, num_examples: float,
    ) -> ArrayRecord:
        sent = layout.flatten(reply_arrays, who="this node's reply")
        own = sent - global_flat if self.reply == "params" else sent
        if not self.trains:
            own = torch.zeros_like(own)
        pid = self.partition_of(context)
        previous = self._previous(context, layout.dim)
        ctx = AttackContext(
            round=server_round - 1,
            own_updates=own.reshape(1, -1).clone(),
            own_weights=torch.tensor([float(num_examples)]),
            honest_updates=None,
            honest_weights=None,
            num_participants=self.num_participants or self._num_partitions(context),
            global_params=global_flat.clone(),
            server_lr=self.server_lr,
            generator=generator(self.seed, "attack", server_round - 1, pid),
            previous_updates=previous.reshape(1, -1),
            campaign_generator=generator(self.seed, "attack"),
        )
        crafted = check_crafted(self.attack.craft(ctx), 1, layout.dim, attack=self.name)
        row = crafted[0].to(torch.float32)
        context.state[_STATE_KEY] = ArrayRecord({"previous": Array(row.numpy().copy())})
        out = global_flat + row if self.reply == "params" else row
        return layout.unflatten(out, reply_arrays)

    def _previous(self, context: Context, dim: int) -> Tensor:
        record = context.state.get(_STATE_KEY) if _STATE_KEY in context.state else None
        if isinstance(record, ArrayRecord) and "previous" in record:
            prev = record["previous"].numpy()
            if prev.shape == (dim,):
                return torch.from_numpy(np.array(prev, dtype=np.float32))
        return torch.zeros(dim)

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """Flower mod: run the train function, then make its reply malicious (other messages pass through)."""
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN or self.kind is AttackKind.DATA:
            return call_next(msg, context)
        server_round = _server_round(msg)
        if not self._attacking(context, server_round):
            return call_next(msg, context)
        # Read the global model before the train function runs: it may consume the message's arrays.
        global_arrays = _one_array_record(msg, self.arrayrecord_key, "train message")
        layout = ArrayLayout.of(global_arrays)
        global_flat = layout.flatten(global_arrays, who="the global model")
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        key = _array_record_key(reply, self.arrayrecord_key, "train reply")
        weight = _metric(reply, self.weighted_by_key)
        crafted = self._craft_flat(layout, global_flat, reply.content.array_records[key], context, server_round, weight)
        reply.content[key] = crafted
        return reply


def _array_record_key(msg: Message, key: str, what: str) -> str:
    records = msg.content.array_records
    if key in records:
        return key
    if len(records) == 1:
        return next(iter(records))
    raise UpdateError(f"{what}: expected one ArrayRecord (key '{key}'), got keys {sorted(records)}")


def _one_array_record(msg: Message, key: str, what: str) -> ArrayRecord:
    return msg.content.array_records[_array_record_key(msg, key, what)]


def _server_round(msg: Message) -> int:
    for record in msg.content.config_records.values():
        value = record.get("server-round") if isinstance(record, ConfigRecord) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise UpdateError("train message: expected 'server-round' in its ConfigRecord (Flower's strategies send it)")


def _metric(msg: Message, key: str) -> float:
    for record in msg.content.metric_records.values():
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    raise UpdateError(f"train reply: expected metric '{key}' (the node's sample count)")
