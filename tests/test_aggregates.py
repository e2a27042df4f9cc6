"""Benchmark aggregate tests (protocol spec section 6)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vilasr.core.aggregates import (
    SPAR_LEVELS,
    VSI_TASK_OF,
    VSI_TASKS,
    aggregate,
    canonical_benchmark,
    format_table,
)


def _rows(spec):
    return [{"score": s, "original_question_type": t} for t, scores in spec for s in scores]


def test_vsi_mapping_covers_real_question_types():
    real = [
        "object_counting",
        "object_abs_distance",
        "object_size_estimation",
        "room_size_estimation",
        "object_rel_distance",
        "object_rel_direction_easy",
        "object_rel_direction_medium",
        "object_rel_direction_hard",
        "route_planning",
        "obj_appearance_order",
    ]
    assert {VSI_TASK_OF[q] for q in real} == set(VSI_TASKS)
    assert len(VSI_TASKS) == 8


def test_aggregate_vsi():
    rows = _rows(
        [
            ("object_rel_direction_easy", [1, 1]),
            ("object_rel_direction_medium", [0]),
            ("object_rel_direction_hard", [0, 1]),
            ("object_counting", [1, 0, 0, 0]),
            ("object_abs_distance", [0.5]),
            ("object_size_estimation", [0.3]),
            ("room_size_estimation", [0.7]),
            ("object_rel_distance", [1]),
            ("route_planning", [0]),
            ("obj_appearance_order", [0.5, 0.5]),
        ]
    )
    s = aggregate("vsi_bench", rows)
    assert list(s["per_task"]) == list(VSI_TASKS)
    # variants merged as the mean of the variant means: (1 + 0 + 0.5) / 3, not 3/5
    assert s["per_task"]["rel_direction"] == pytest.approx(0.5)
    assert s["per_task"]["counting"] == pytest.approx(0.25)
    assert s["counts"]["rel_direction"] == 5
    expected = (1 + 0.5 + 0 + 0.5 + 0.25 + 0.5 + 0.3 + 0.7) / 8
    assert s["overall"] == pytest.approx(expected)
    assert s["n"] == len(rows)
    assert s["groups"] == {}
    assert s["benchmark"] == "vsi_bench"
    assert s["missing"] == []


def test_aggregate_vsi_is_unweighted_over_tasks():
    rows = _rows([("object_counting", [1] * 99), ("route_planning", [0])])
    s = aggregate("VSI-Bench", rows)
    assert s["overall"] == pytest.approx(0.5)  # not 99/100
    assert s["missing"] == [t for t in VSI_TASKS if t not in ("counting", "route_planning")]


def test_aggregate_spar():
    rows = _rows(
        [
            ("depth_prediction_oc", [1, 0]),
            ("distance_prediction_oo_mv", [0.3]),
            ("view_change_infer", [0.8]),
            ("obj_spatial_relation_oo", [1]),
        ]
    )
    s = aggregate("spar_bench", rows)
    assert s["per_task"] == pytest.approx(
        {
            "depth_prediction_oc": 0.5,
            "distance_prediction_oo_mv": 0.3,
            "view_change_infer": 0.8,
            "obj_spatial_relation_oo": 1.0,
        }
    )
    assert s["overall"] == pytest.approx((0.5 + 0.3 + 0.8 + 1.0) / 4)
    assert s["groups"] == pytest.approx({"Low": 0.4, "Medium": 0.8, "High": 1.0})


def test_spar_levels_partition():
    all_types = [t for ts in SPAR_LEVELS.values() for t in ts]
    assert len(all_types) == len(set(all_types)) == 20
    assert list(SPAR_LEVELS) == ["Low", "Medium", "High"]


@pytest.mark.parametrize("bench", ["maze", "spatialeval_real", "mmsi", "mmsi_bench", "something_else"])
def test_aggregate_others_pooled_mean(bench):
    rows = _rows([("a", [1, 1, 1]), ("b", [0])])
    s = aggregate(bench, rows)
    assert s["overall"] == pytest.approx(0.75)
    assert s["per_task"] == pytest.approx({"a": 1.0, "b": 0.0})
    assert s["groups"] == {}


@pytest.mark.parametrize(
    "rows, expected_overall",
    [
        ([], 0.0),
        ([{"score": None}], 0.0),
        ([{"score": float("nan")}, {"score": 1}], 0.5),
        ([{"score": "bad", "original_question_type": None}, {}], 0.0),
    ],
)
def test_aggregate_tolerates_bad_rows(rows, expected_overall):
    s = aggregate("maze", rows)
    assert s["overall"] == pytest.approx(expected_overall)
    assert s["n"] == len(rows)


def test_canonical_benchmark():
    assert canonical_benchmark("VSI-Bench") == "vsi_bench"
    assert canonical_benchmark("vsibench") == "vsi_bench"
    assert canonical_benchmark("SpatialEval_spatialreal") == "spatialeval_real"
    assert canonical_benchmark("mmsi") == "mmsi_bench"
    assert canonical_benchmark("spar_bench_tiny") == "spar_bench"


def test_format_table():
    s = aggregate("spar_bench", _rows([("depth_prediction_oc", [1, 0]), ("view_change_infer", [0.8123])]))
    t = format_table(s)
    lines = t.splitlines()
    assert "spar_bench" in lines[0]
    assert any(ln.startswith("depth_prediction_oc") and ln.rstrip().endswith("50.0") for ln in lines)
    assert any(ln.startswith("view_change_infer") and ln.rstrip().endswith("81.2") for ln in lines)
    assert any(ln.startswith("Low") and ln.rstrip().endswith("50.0") for ln in lines)
    overall = [ln for ln in lines if ln.startswith("overall")][0]
    assert overall.rstrip().endswith(f"{100 * (0.5 + 0.8123) / 2:.1f}")
    # aligned: every score column ends at the same position
    body = [ln for ln in lines[1:] if not set(ln) <= {"-"} and not ln.startswith("missing")]
    assert len({len(ln) for ln in body}) == 1
    assert "missing (not in overall): depth_prediction_oo" in t
    assert format_table({}).startswith("benchmark")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "score": st.one_of(st.none(), st.text(max_size=5), st.floats(0, 1), st.just(float("nan"))),
                "original_question_type": st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats()),
            }
        ),
        max_size=8,
    )
)
def test_aggregate_never_raises(rows):
    for bench in ("vsi_bench", "spar_bench", "maze"):
        s = aggregate(bench, rows)
        assert 0.0 <= s["overall"] <= 1.0
        assert isinstance(format_table(s), str)
