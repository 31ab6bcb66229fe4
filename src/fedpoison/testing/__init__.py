"""Public contract checks and fakes for plug-ins, like scikit-learn's ``check_estimator``.

Run them on a plug-in of your own::

    from fedpoison.testing import check_rule
    check_rule(MyRule)            # raises ContractError naming the broken check

or, in a pytest suite, one test per check::

    @pytest.mark.parametrize(("name", "check"), rule_checks(MyRule))
    def test_my_rule(name, check):
        check()

fedpoison's own test suite runs the same checks over every registered plug-in.
"""

from fedpoison.testing.build import build_attack, build_auditor, build_defense_step
from fedpoison.testing.checks import (
    ContractError,
    attack_checks,
    auditor_checks,
    check_attack,
    check_auditor,
    check_dataset,
    check_model,
    check_partition,
    check_pre_aggregator,
    check_rule,
    dataset_checks,
    model_checks,
    partition_checks,
    pre_aggregator_checks,
    rule_checks,
)
from fedpoison.testing.fakes import (
    fixed_root_update,
    make_attack_context,
    make_images,
    make_malicious_training,
    make_round_context,
    make_updates,
)

__all__ = [
    "ContractError",
    "attack_checks",
    "auditor_checks",
    "build_attack",
    "build_auditor",
    "build_defense_step",
    "check_attack",
    "check_auditor",
    "check_dataset",
    "check_model",
    "check_partition",
    "check_pre_aggregator",
    "check_rule",
    "dataset_checks",
    "fixed_root_update",
    "make_attack_context",
    "make_images",
    "make_malicious_training",
    "make_round_context",
    "make_updates",
    "model_checks",
    "partition_checks",
    "pre_aggregator_checks",
    "rule_checks",
]
