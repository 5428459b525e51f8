"""What the API derives from stored results, as pure functions: the Pareto front of accuracy against a cost."""
from __future__ import annotations

from dashboard.presenters import pareto_front


def test_the_front_keeps_each_point_nothing_beats_on_both_cost_and_accuracy_cheapest_first():
    points = {"small": (1.0, 0.70), "medium": (2.0, 0.80), "slow and worse": (3.0, 0.75), "best": (5.0, 0.90),
              "as good but dearer": (6.0, 0.90)}
    assert pareto_front(points) == ["small", "medium", "best"]


def test_equal_points_are_both_on_the_front_and_a_point_is_beaten_by_one_better_on_a_single_axis():
    assert pareto_front({"a": (1.0, 0.5), "b": (1.0, 0.5)}) == ["a", "b"]
    assert pareto_front({"cheaper": (1.0, 0.5), "dearer": (2.0, 0.5)}) == ["cheaper"]
    assert pareto_front({"better": (1.0, 0.6), "worse": (1.0, 0.5)}) == ["better"]
    assert pareto_front({}) == []
