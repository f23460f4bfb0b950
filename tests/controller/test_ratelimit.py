from __future__ import annotations

import pytest

from controller.queue.clock import FakeClock
from controller.queue.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_doubles_from_base_and_caps() -> None:
    rl = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)
    delays = [rl.when("a") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[17] == pytest.approx(0.005 * 2**17)
    assert delays[18] == 1000.0  # 0.005 * 2^18 = 1310.72 > cap
    assert rl.num_requeues("a") == 20


def test_exponential_is_per_item_and_forget_resets() -> None:
    rl = ItemExponentialFailureRateLimiter()
    rl.when("a")
    rl.when("a")
    assert rl.when("b") == 0.005
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == 0.005
    rl.forget("never-seen")  # harmless


def test_exponential_never_overflows() -> None:
    rl = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)
    for _ in range(2000):
        delay = rl.when("a")
    assert delay == 1000.0


def test_exponential_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="need"):
        ItemExponentialFailureRateLimiter(base_delay=0)
    with pytest.raises(ValueError, match="need"):
        ItemExponentialFailureRateLimiter(base_delay=2, max_delay=1)


def test_bucket_allows_burst_then_spaces_at_qps() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [rl.when(i) for i in range(100)] == [0.0] * 100
    assert rl.when("x") == pytest.approx(0.1)
    assert rl.when("y") == pytest.approx(0.2)
    assert rl.num_requeues("x") == 0


def test_bucket_refills_with_time_up_to_burst() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=10, burst=5, clock=clock)
    for i in range(5):
        assert rl.when(i) == 0.0
    clock.step(0.3)  # 3 tokens back
    assert [rl.when(i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert rl.when("next") == pytest.approx(0.1)
    clock.step(100)  # refill is capped at the burst
    assert [rl.when(i) for i in range(5)] == [0.0] * 5
    assert rl.when("over") > 0


def test_bucket_debt_is_paid_back() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=1, burst=1, clock=clock)
    assert rl.when("a") == 0.0
    assert rl.when("b") == pytest.approx(1.0)
    assert rl.when("c") == pytest.approx(2.0)
    clock.step(2.0)
    assert rl.when("d") == pytest.approx(1.0)


def test_max_of_takes_worst_and_forgets_everywhere() -> None:
    clock = FakeClock()
    exp = ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=100)
    bucket = BucketRateLimiter(qps=1, burst=1, clock=clock)
    rl = MaxOfRateLimiter(exp, bucket)
    assert rl.when("a") == 1.0  # exp 1.0, bucket 0
    assert rl.when("a") == 2.0  # exp 2.0, bucket 1.0
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    with pytest.raises(ValueError, match="at least one"):
        MaxOfRateLimiter()


def test_default_controller_rate_limiter_matches_client_go() -> None:
    clock = FakeClock()
    rl = default_controller_rate_limiter(clock=clock)
    assert rl.when("a") == 0.005
    assert rl.when("a") == 0.01
    for i in range(98):
        rl.when(f"k{i}")  # burst of 100 used up (100 tokens taken in total)
    # The next item's own backoff is 5 ms, but the bucket now owes 0.1 s.
    assert rl.when("fresh") == pytest.approx(0.1)
