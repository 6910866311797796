from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.server.restarts import BackoffConfig, plan_restart

BACKOFF = BackoffConfig(initial_s=0.5, max_s=4.0, reset_after_s=60.0)


def test_deaths_in_a_row_double_the_wait_up_to_the_cap() -> None:
    failures, delays = 0, []
    for _ in range(6):
        plan = plan_restart(started_s=100.0, died_s=101.0, failures_before=failures, backoff=BACKOFF)
        failures = plan.failures
        delays.append(plan.delay_s)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert failures == 6


def test_a_worker_that_ran_long_enough_starts_the_count_again() -> None:
    plan = plan_restart(started_s=100.0, died_s=160.0, failures_before=5, backoff=BACKOFF)
    assert (plan.delay_s, plan.failures) == (0.5, 1)
    plan = plan_restart(started_s=100.0, died_s=159.9, failures_before=5, backoff=BACKOFF)
    assert (plan.delay_s, plan.failures) == (4.0, 6)


def test_bad_backoff_settings_are_refused_with_both_values() -> None:
    with pytest.raises(ConfigError, match=r"initial_s 5\.0 must be > 0 and <= max_s 1\.0"):
        BackoffConfig(initial_s=5.0, max_s=1.0)
    with pytest.raises(ConfigError, match="reset_after_s"):
        BackoffConfig(reset_after_s=0)
