"""Delta_m on golden values, both definitions."""

from __future__ import annotations

import pytest

from manytask.mtl.delta import delta_m, signed_relative_differences

MODEL = {"a": {"acc": 90.0}, "b": {"mse": 0.5, "mae": 0.6}}
BASE = {"a": {"acc": 80.0}, "b": {"mse": 1.0, "mae": 0.5}}
DIRS = {"acc": True, "mse": False, "mae": False}


def test_signed_relative_differences_are_positive_when_better():
    r = signed_relative_differences(MODEL, BASE, DIRS)
    assert r == {"a": {"acc": pytest.approx(0.125)},
                 "b": {"mse": pytest.approx(0.5), "mae": pytest.approx(-0.2)}}  # fmt: skip


def test_libmtl_averages_within_each_task_first():
    d = delta_m(MODEL, BASE, DIRS)
    # task a: +12.5%; task b: (+50% - 20%) / 2 = +15%; mean +13.75%.
    assert d.value == pytest.approx(13.75)
    assert d.per_task == {"a": pytest.approx(12.5), "b": pytest.approx(15.0)}
    assert d.higher_is_better and d.metrics == 3
    assert str(d) == "Delta_m +13.75% (libmtl, higher is better)"


def test_nash_mtl_pools_every_metric_and_flips_the_sign():
    d = delta_m(MODEL, BASE, DIRS, "nash_mtl")
    assert d.value == pytest.approx(-(12.5 + 50.0 - 20.0) / 3)  # -14.1667: lower is better
    assert not d.higher_is_better


def test_the_definitions_agree_up_to_sign_with_one_metric_per_task():
    model = {"a": {"acc": 70.0}, "b": {"mse": 2.0}}
    base = {"a": {"acc": 80.0}, "b": {"mse": 1.0}}
    lib, nash = delta_m(model, base, DIRS), delta_m(model, base, DIRS, "nash_mtl")
    assert lib.value == pytest.approx(-(12.5 + 100.0) / 2)
    assert nash.value == pytest.approx(-lib.value)


def test_the_same_model_as_the_baseline_is_zero():
    assert delta_m(BASE, BASE, DIRS).value == 0.0


@pytest.mark.parametrize(("model", "base", "match"), [
    ({"c": {"acc": 1.0}}, BASE, "no result for task 'c'"),
    ({"a": {"auc": 1.0}}, BASE, "has no 'auc'"),
    ({"a": {"acc": 1.0}}, {"a": {"acc": 0.0}}, "is 0"),
    ({"a": {"acc": float("nan")}}, BASE, "not finite"),
])  # fmt: skip
def test_undefined_cases_are_errors(model, base, match):
    with pytest.raises(ValueError, match=match):
        delta_m(model, base, {**DIRS, "auc": True})


def test_unknown_definition():
    with pytest.raises(ValueError, match="libmtl"):
        delta_m(MODEL, BASE, DIRS, "maninis")
