"""Fault configuration and injection: parsing, validation, seeded draws, counting.

The HTTP behaviour of each fault (what the client actually sees) is tested in
tests/test_sim_server.py against a running server.
"""

from __future__ import annotations

import pytest

from simulator.faults import FAULT_KINDS, FaultConfig, FaultInjector

FULL_SPEC = (
    "error_rate=0.05,latency_ms=50-400,rate_limit=0.02,timeout=0.01,"
    "reset=0.01,malformed=0.01,accept_then_timeout=0.01"
)


def test_parse_full_spec_from_the_issue() -> None:
    config = FaultConfig.parse(FULL_SPEC)
    assert config.error_rate == 0.05
    assert config.latency_ms == (50.0, 400.0)
    assert config.rate_limit == 0.02
    assert config.timeout == 0.01
    assert config.reset == 0.01
    assert config.malformed == 0.01
    assert config.accept_then_timeout == 0.01
    assert config.timeout_s == 30.0
    assert config.active


def test_spec_round_trips_through_to_spec() -> None:
    config = FaultConfig.parse(FULL_SPEC + ",timeout_s=2,endpoints=/v2/orders*|/v2/positions,seed=7")
    assert FaultConfig.parse(config.to_spec()) == config


def test_empty_spec_means_no_faults() -> None:
    config = FaultConfig.parse("")
    assert not config.active
    assert FaultInjector(config).choose("GET", "/v2/account") is None


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("error_rat=0.1", "error_rat"),
        ("error_rate=lots", "error_rate"),
        ("error_rate=1.5", "error_rate"),
        ("reset=-0.1", "reset"),
        ("latency_ms=400-50", "latency_ms"),
        ("latency_ms=abc", "latency_ms"),
        ("timeout_s=0", "timeout_s"),
        ("error_rate", "error_rate"),
        ("error_rate=0.1,error_rate=0.2", "error_rate"),
        ("endpoints=v2/orders", "endpoints"),
        ("error_rate=0.6,reset=0.6", "sum"),
        ("race=2", "race"),
        ("race=0.1,race_mode=sometimes", "race_mode"),
    ],
)
def test_bad_spec_names_the_key_and_what_is_allowed(spec: str, named: str) -> None:
    with pytest.raises(ValueError) as info:
        FaultConfig.parse(spec)
    message = str(info.value)
    assert named in message
    assert any(word in message for word in ("must", "allowed", "expected", "twice"))


def test_unknown_key_lists_the_allowed_keys() -> None:
    with pytest.raises(ValueError, match="allowed keys are error_rate"):
        FaultConfig.parse("explode=1")


def test_from_mapping_accepts_json_numbers_and_lists() -> None:
    config = FaultConfig.from_mapping(
        {"reset": 0.5, "latency_ms": [10, 20], "endpoints": ["/v2/orders*"], "timeout_s": 3}
    )
    assert config.reset == 0.5
    assert config.latency_ms == (10.0, 20.0)
    assert config.endpoints == ("/v2/orders*",)
    assert config.timeout_s == 3.0


def test_fixed_latency_is_one_number() -> None:
    assert FaultConfig.parse("latency_ms=75").latency_ms == (75.0, 75.0)


def test_same_seed_gives_same_faults() -> None:
    config = FaultConfig.parse("error_rate=0.2,reset=0.2,malformed=0.2,seed=9")
    first = [FaultInjector(config).choose("GET", "/v2/account") for _ in range(1)]
    a = FaultInjector(config)
    b = FaultInjector(config)
    draws_a = [a.choose("GET", "/v2/account") for _ in range(200)]
    draws_b = [b.choose("GET", "/v2/account") for _ in range(200)]
    assert draws_a == draws_b
    assert first[0] == draws_a[0]
    assert {"error_rate", "reset", "malformed", None} == set(draws_a)


def test_rates_are_roughly_respected_and_counted() -> None:
    injector = FaultInjector(FaultConfig.parse("error_rate=0.1,rate_limit=0.1,seed=1"))
    draws = [injector.choose("GET", "/v2/positions") for _ in range(5000)]
    errors = draws.count("error_rate")
    limited = draws.count("rate_limit")
    assert 350 < errors < 650
    assert 350 < limited < 650
    assert injector.counts["error_rate"] == errors
    assert injector.counts["rate_limit"] == limited
    assert injector.counts["reset"] == 0


def test_certain_fault_always_fires() -> None:
    for kind in FAULT_KINDS:
        injector = FaultInjector(FaultConfig.from_mapping({kind: 1.0}))
        assert injector.choose("POST", "/v2/orders") == kind
        assert injector.counts[kind] == 1


def test_accept_then_timeout_only_hits_order_submission() -> None:
    injector = FaultInjector(FaultConfig.parse("accept_then_timeout=1"))
    assert injector.choose("GET", "/v2/orders") is None
    assert injector.choose("DELETE", "/v2/orders") is None
    assert injector.choose("GET", "/v2/account") is None
    assert injector.choose("POST", "/v2/orders") == "accept_then_timeout"
    assert injector.counts["accept_then_timeout"] == 1


def test_endpoint_filter_limits_faults_to_matching_paths() -> None:
    injector = FaultInjector(FaultConfig.parse("error_rate=1,endpoints=/v2/orders*"))
    assert injector.choose("GET", "/v2/account") is None
    assert injector.choose("GET", "/v2/orders/abc") == "error_rate"
    assert injector.latency_seconds("/v2/account") == 0.0


def test_latency_is_drawn_within_bounds_and_counted() -> None:
    injector = FaultInjector(FaultConfig.parse("latency_ms=50-400"))
    delays = [injector.latency_seconds("/v2/account") for _ in range(100)]
    assert all(0.05 <= d <= 0.4 for d in delays)
    assert injector.counts["latency_ms"] == 100


def test_configure_and_clear_at_run_time_keep_counting() -> None:
    counts: dict[str, int] = {}
    injector = FaultInjector(counts=counts)
    assert injector.choose("GET", "/v2/account") is None
    injector.configure(FaultConfig.parse("reset=1"))
    assert injector.choose("GET", "/v2/account") == "reset"
    injector.clear()
    assert injector.choose("GET", "/v2/account") is None
    assert counts["reset"] == 1  # the shared dict is the one the core reports


# -- race --------------------------------------------------------------------------------


def test_race_parses_round_trips_and_is_independent_of_the_per_request_kinds() -> None:
    config = FaultConfig.parse("race=0.2,race_mode=mixed,error_rate=1,seed=9")
    assert (config.race, config.race_mode) == (0.2, "mixed") and config.active
    assert FaultConfig.parse(config.to_spec()) == config
    assert FaultConfig.parse("race=1").active and FaultConfig.parse("race=1").race_mode == "fill"
    # Race draws do not move the per-request draws of the other kinds.
    plain = FaultInjector(FaultConfig.parse("error_rate=0.5,seed=9"))
    racing = FaultInjector(FaultConfig.parse("error_rate=0.5,race=0.5,seed=9"))
    for _ in range(50):
        racing.choose_race("DELETE", "/v2/orders/0b9e4b6e-0d5b-4b1c-9a0e-8c7c2f3b3c11")
        assert plain.choose("GET", "/v2/account") == racing.choose("GET", "/v2/account")


def test_race_is_drawn_only_for_a_cancel_or_replace_of_one_order() -> None:
    injector = FaultInjector(FaultConfig.parse("race=1"))
    order = "/v2/orders/0b9e4b6e-0d5b-4b1c-9a0e-8c7c2f3b3c11"
    assert injector.choose_race("DELETE", order) == "fill"
    assert injector.choose_race("PATCH", order) == "fill"
    for method, path in (("GET", order), ("POST", "/v2/orders"), ("DELETE", "/v2/orders"),
                         ("DELETE", "/v2/positions/SPY"), ("GET", "/v2/orders:by_client_order_id")):
        assert injector.choose_race(method, path) is None
    assert FaultInjector(FaultConfig.parse("race=1,endpoints=/v2/positions*")).choose_race("DELETE", order) is None
    assert FaultInjector(FaultConfig.parse("race=1,race_mode=cancel")).choose_race("DELETE", order) == "cancel"


def test_race_at_zero_never_fires_and_draws_are_seeded() -> None:
    order = "/v2/orders/0b9e4b6e-0d5b-4b1c-9a0e-8c7c2f3b3c11"
    never = FaultInjector(FaultConfig.parse("race=0,error_rate=0.5"))
    assert all(never.choose_race("DELETE", order) is None for _ in range(200))

    def draws(seed: int) -> list[str | None]:
        injector = FaultInjector(FaultConfig.parse(f"race=0.3,race_mode=mixed,seed={seed}"))
        return [injector.choose_race("PATCH", order) for _ in range(300)]

    assert draws(4) == draws(4) and draws(4) != draws(5)
    fired = [d for d in draws(4) if d is not None]
    assert 60 <= len(fired) <= 120 and set(fired) == {"fill", "cancel"}


def test_the_simulators_seed_is_the_faults_seed_unless_the_spec_names_one() -> None:
    assert FaultConfig.parse("race=0.2", default_seed=77).seed == 77
    assert FaultConfig.parse("race=0.2,seed=3", default_seed=77).seed == 3
    assert FaultConfig.parse("race=0.2").seed == 42
