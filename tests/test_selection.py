"""Chart selection handling as pure functions: Plotly/Streamlit events -> sample keys -> counts and CSV."""

import csv
import io

import numpy as np
import pytest

from core.selection import (
    SelectionError,
    class_counts,
    make_key,
    parse_key,
    selected_keys,
    selection_rows,
    split_keys,
    thumbnails_html,
    to_csv,
    train_ids,
)

Y_TRAIN = np.array([0, 1, 2, 0, 1, 2, 0, 1])
Y_TEST = np.array([2, 2, 1, 0])
NAMES = ("zero", "one", "two")


def event(points):
    """The shape Streamlit 1.67 returns from st.plotly_chart(on_select="rerun")."""
    return {"selection": {"points": points, "point_indices": [p.get("point_index") for p in points],
                          "box": [], "lasso": []}}


def test_customdata_as_positional_dict_which_streamlit_sends():
    points = [{"curve_number": 0, "point_index": 0, "customdata": {"0": "train:3"}},
              {"curve_number": 1, "point_index": 0, "customdata": {"0": "test:1"}}]
    assert selected_keys(event(points)) == ["train:3", "test:1"]


def test_customdata_as_list_tuple_or_scalar():
    points = [{"customdata": ["train:1", "extra"]}, {"customdata": ("train:2",)}, {"customdata": "test:0"}]
    assert selected_keys(event(points)) == ["train:1", "train:2", "test:0"]


def test_point_index_is_per_trace_so_it_is_not_used_when_customdata_is_there():
    # Two traces (colour split them): both points have point_index 0 but they are different samples.
    points = [{"curve_number": 0, "point_index": 0, "customdata": {"0": "train:5"}},
              {"curve_number": 3, "point_index": 0, "customdata": {"0": "train:6"}}]
    assert selected_keys(event(points)) == ["train:5", "train:6"]


def test_fallback_to_trace_keys_when_points_carry_no_customdata():
    trace_keys = [["train:0", "train:1"], ["test:0", "test:3"]]
    points = [{"curve_number": 1, "point_index": 1}, {"curve_number": 0, "point_number": 0}]
    assert selected_keys(event(points), trace_keys) == ["test:3", "train:0"]


def test_the_same_sample_in_several_panels_counts_once_and_order_is_kept():
    points = [{"customdata": {"0": "train:7"}}, {"customdata": {"0": "train:2"}}, {"customdata": {"0": "train:7"}}]
    assert selected_keys(event(points)) == ["train:7", "train:2"]


def test_markers_without_a_sample_key_are_ignored():
    points = [{"customdata": None}, {"text": "prototype of 3"}, {"customdata": {"0": 12.5}},
              {"customdata": {"0": "test:2"}}]
    assert selected_keys(event(points)) == ["test:2"]


@pytest.mark.parametrize("empty", [None, {}, {"selection": {}}, {"selection": {"points": []}}, []])
def test_empty_events(empty):
    assert selected_keys(empty) == []


def test_attribute_style_state_and_bare_point_lists():
    class State:
        def __init__(self, points):
            self.selection = type("Sel", (), {"points": points})()

    assert selected_keys(State([{"customdata": {"0": "train:1"}}])) == ["train:1"]
    assert selected_keys([{"customdata": {"0": "test:0"}}]) == ["test:0"]


def test_dict_customdata_is_ordered_by_position():
    point = {"customdata": {"1": "ignored", "0": "train:4"}}
    assert selected_keys(event([point])) == ["train:4"]


def test_malformed_keys_are_rejected():
    with pytest.raises(SelectionError):
        selected_keys(event([{"customdata": {"0": "valid:3"}}]))
    for bad in ("train", "train:x", "train:-1", "val:1", 3):
        with pytest.raises(SelectionError):
            parse_key(bad)
    with pytest.raises(SelectionError):
        make_key("val", 1)


def test_keys_round_trip_and_split():
    keys = [make_key("train", 5), make_key("test", 2), "train:1", "train:5"]
    assert parse_key(keys[0]) == ("train", 5)
    parts = split_keys(keys)
    assert parts["train"].tolist() == [1, 5] and parts["test"].tolist() == [2]
    assert train_ids(keys) == [1, 5]


def test_class_counts_per_split():
    keys = ["train:0", "train:3", "train:1", "test:0", "test:3"]
    rows = class_counts(keys, Y_TRAIN, Y_TEST, NAMES)
    assert rows == [{"class": 0, "name": "zero", "train": 2, "test": 1, "total": 3},
                    {"class": 1, "name": "one", "train": 1, "test": 0, "total": 1},
                    {"class": 2, "name": "two", "train": 0, "test": 1, "total": 1}]


def test_out_of_range_ids_are_reported():
    with pytest.raises(SelectionError, match="out of range"):
        selection_rows(["train:99"], Y_TRAIN, Y_TEST, NAMES)


def test_rows_and_csv_export():
    keys = ["train:2", "test:1"]
    preds = {"original": {"train:2": 2, "test:1": 2}, "unlearned": {"train:2": 0}}
    forgotten = np.zeros(len(Y_TRAIN), bool)
    forgotten[2] = True
    rows = selection_rows(keys, Y_TRAIN, Y_TEST, NAMES, preds, forgotten)
    assert rows[0] == {"key": "train:2", "split": "train", "id": 2, "label": 2, "label_name": "two",
                       "pred_original": 2, "pred_unlearned": 0, "forgotten": True}
    assert rows[1]["pred_unlearned"] is None and rows[1]["forgotten"] is False
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["key"] for r in parsed] == keys
    assert parsed[0]["pred_unlearned"] == "0" and parsed[1]["pred_unlearned"] == ""
    assert to_csv([]).splitlines() == ["key,split,id,label,label_name,forgotten"]


def test_thumbnails_carry_their_keys():
    images = [np.zeros((1, 8, 8), np.float32), np.ones((3, 8, 8), np.float32)]
    html = thumbnails_html(images, ["a <b>", "b"], ["train:1", "test:0"], marked=["test:0"], grid="selection")
    assert 'data-grid="selection"' in html
    assert html.count('class="ue-thumb"') == 2 and 'data-key="train:1"' in html and 'data-key="test:0"' in html
    assert "a &lt;b&gt;" in html and "data:image/png;base64," in html and "#d62728" in html
