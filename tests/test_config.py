import dataclasses

import pytest

from spatten.config import PruningSchedule, SpAttenConfig


def test_defaults_change_nothing_and_paper_preset_prunes():
    assert SpAttenConfig().is_noop
    paper = SpAttenConfig.paper()
    assert (paper.token_keep, paper.head_keep, paper.value_keep, paper.k_bits, paper.v_bits) == (0.5, 0.9, 0.2, (6, 4), 6)
    assert not paper.is_noop


@pytest.mark.parametrize("field, value", [
    ("token_keep", 0.0), ("token_keep", 1.5), ("head_keep", -0.1), ("value_keep", "half"), ("token_keep", True),
    ("k_bits", (0, 4)), ("k_bits", (12, 8)), ("k_bits", 8), ("k_bits", (6, -1)), ("v_bits", 1), ("v_bits", 17),
    ("refetch_threshold", -0.1), ("refetch_threshold", float("nan")), ("quant_group", "channel"),
    ("sink_tokens", -1), ("sink_tokens", 1.5), ("recent_window", True), ("importance_norm", "max"),
    ("importance_decay", 0.0), ("importance_decay", 1.5), ("prefill_pruning", "never"),
])
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SpAttenConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("token_unpruned_fraction", 1.2), ("head_unpruned_min", 0), ("ramp", "cubic")])
def test_bad_schedule_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"schedule.{field}"):
        PruningSchedule(**{field: value})


def test_json_and_yaml_round_trip_and_replace():
    cfg = SpAttenConfig(token_keep=0.3, k_bits=(6, 4), v_bits=8, schedule=PruningSchedule(ramp="budget"),
                        sink_tokens=2, recent_window=8, importance_norm="mean", importance_decay=0.9,
                        prefill_pruning="after")
    assert SpAttenConfig.from_json(cfg.to_json()) == cfg
    assert SpAttenConfig.from_yaml(cfg.to_yaml()) == cfg
    assert SpAttenConfig.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg, head_keep=0.5).head_keep == 0.5
    with pytest.raises(ValueError, match="token_kep"):
        SpAttenConfig.from_dict({"token_kep": 0.5})
    with pytest.raises(ValueError, match="schedule.rampp"):
        SpAttenConfig.from_dict({"schedule": {"rampp": "linear"}})
    with pytest.raises(ValueError, match="malformed"):
        SpAttenConfig.from_yaml("token_keep: [")


def test_schedule_matches_the_paper_by_hand():
    # 12 layers: ceil(0.15 * 12) = 2 unpruned for tokens, ceil(0.3 * 12) = 4 for heads; linear to the final ratio.
    sched = PruningSchedule()
    tokens = sched.keep_ratios(12, 0.5, "token")
    assert tokens[:2] == [1.0, 1.0]
    assert tokens[2] == pytest.approx(1 - 0.5 * 1 / 10)
    assert tokens[-1] == pytest.approx(0.5)
    heads = sched.keep_ratios(12, 0.5, "head")
    assert heads[:4] == [1.0] * 4 and heads[4] == pytest.approx(1 - 0.5 / 8) and heads[-1] == pytest.approx(0.5)
    # LTP: at least 3 unpruned layers.
    assert PruningSchedule(token_unpruned_min=3).keep_ratios(12, 0.5, "token")[:4] == [1.0, 1.0, 1.0,
                                                                                        pytest.approx(1 - 0.5 / 9)]
    assert PruningSchedule(ramp="constant").keep_ratios(4, 0.25, "token") == [1.0, 0.25, 0.25, 0.25]
    assert sched.keep_ratios(4, 1.0, "token") == [1.0] * 4
