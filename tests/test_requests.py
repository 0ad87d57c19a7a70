"""Forget requests: construction, hashing, JSON round trips, id parsing, and every validation path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data import Dataset
from core.data.id_lists import parse_ids_text
from core.data.requests import ForgetRequest, ForgetRequestError, request_classes, request_ids, request_random


def make_dataset(labels=(0, 1, 2, 0, 1, 2, 0, 1, 2, 0), num_classes: int = 3, seed: int = 0) -> Dataset:
    """A tiny dataset: training labels as given, ids 0..N-1."""
    y = np.asarray(labels, dtype=np.int64)
    x = np.random.default_rng(seed).random((len(y), 1, 8, 8), dtype=np.float32)
    names = ("ant", "bee", "cat", "dog")[:num_classes]
    return Dataset("tiny", x, y, x[:num_classes], np.arange(num_classes), names)


@pytest.fixture
def ds() -> Dataset:
    return make_dataset()


# ---------------------------------------------------------------------------------------------------------
# building requests


def test_class_request(ds):
    r = request_classes(ds, [0])
    assert r.kind == "class" and r.classes == (0,) and r.ids == (0, 3, 6, 9)
    assert r.description == "class 0 (ant)" and r.dataset_fingerprint == ds.fingerprint()
    two = request_classes(ds, ["cat", 1])  # names and indices, any order
    assert two.classes == (1, 2) and two.ids == (1, 2, 4, 5, 7, 8)
    assert two.description == "classes 1 (bee), 2 (cat)"
    assert request_classes(ds, np.array([2])).classes == (2,)


def test_random_request_is_seeded_and_sized(ds):
    r = request_random(ds, 0.3, seed=0)
    assert r.kind == "random" and r.classes == () and len(r.ids) == 3
    assert r.ids == tuple(sorted(np.random.default_rng(0).choice(10, 3, replace=False).tolist()))
    assert r.description == "random 30% (seed 0)"
    assert request_random(ds, 0.3, seed=0) == r
    assert request_random(ds, 0.25, seed=0).ids.__len__() == 2  # round(2.5) -> 2, banker's rounding


def test_random_request_ids_are_unique_sorted_and_seed_dependent():
    big = make_dataset(labels=np.arange(1000) % 4, num_classes=4)
    r = request_random(big, 0.1, seed=0)
    assert len(r.ids) == 100 and list(r.ids) == sorted(set(r.ids))
    assert r.ids != request_random(big, 0.1, seed=1).ids
    assert r.key() != request_random(big, 0.1, seed=1).key()


def test_ids_request(ds):
    r = request_ids(ds, [7, 2, np.int64(5)])
    assert r.kind == "ids" and r.ids == (2, 5, 7) and r.classes == ()
    assert r.description == "3 ids"
    assert request_ids(ds, [4]).description == "1 id"


def test_duplicate_ids_are_kept_once_and_counted(ds):
    r = request_ids(ds, [1, 2, 2, 5, 5, 5])
    assert r.ids == (1, 2, 5) and r.description == "3 ids" and r.duplicates_dropped == 3
    assert r == request_ids(ds, [1, 2, 5]) and r.key() == request_ids(ds, [1, 2, 5]).key()
    assert request_ids(ds, [1, 2]).duplicates_dropped == 0


def test_key_depends_on_content_only(ds):
    a, b = request_ids(ds, [1, 2]), request_ids(ds, [2, 1])
    assert a.key() == b.key() and len(a.key()) == 16
    assert a.key() != request_ids(ds, [1, 3]).key()
    other_data = make_dataset(seed=1)
    assert a.key() != request_ids(other_data, [1, 2]).key()
    # same ids, different kind: a class request is not an id list
    cls = request_classes(ds, [0])
    as_ids = ForgetRequest(cls.ids, (), "ids", "4 ids", cls.dataset_fingerprint)
    assert cls.key() != as_ids.key()


def test_mask(ds):
    r = request_ids(ds, [0, 9])
    mask = r.mask(ds.num_train)
    assert mask.dtype == bool and mask.tolist() == [True] + [False] * 8 + [True]
    with pytest.raises(ForgetRequestError, match="id 9 but the training set has 5"):
        r.mask(5)


def test_json_round_trip(ds):
    for r in (request_classes(ds, [1]), request_random(ds, 0.2, 3), request_ids(ds, [4, 8])):
        d = json.loads(json.dumps(r.to_json()))
        assert d["key"] == r.key()
        assert ForgetRequest.from_json(d, ds) == r


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("ids"), "lacks ids"),
        (lambda d: d.update(dataset_fingerprint="0" * 16), "was made for data 0000"),
        (lambda d: d.update(kind="lasso"), "unknown request kind 'lasso'"),
        (lambda d: d.update(ids=[4, 4]), "stored ids list 4 more than once"),
        (lambda d: d.update(ids=[4, 99]), "unknown id"),
        (lambda d: d.update(classes=[1]), "must not list classes"),
        (lambda d: d.update(ids=[4, 9]), "does not match the request's content"),
    ],
)
def test_from_json_revalidates(ds, change, message):
    d = request_ids(ds, [4, 8]).to_json()
    change(d)
    with pytest.raises(ForgetRequestError, match=message):
        ForgetRequest.from_json(d, ds)


def test_from_json_class_ids_must_match_classes(ds):
    d = request_classes(ds, [1]).to_json()
    d["ids"] = [1, 4]
    with pytest.raises(ForgetRequestError, match="do not match the samples of the stored classes"):
        ForgetRequest.from_json(d, ds)


def test_unknown_kind_in_constructor():
    with pytest.raises(ForgetRequestError, match="unknown request kind"):
        ForgetRequest((1,), (), "everything", "", "fp")


# ---------------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([], "empty"),
        ([3], r"unknown class 3; classes are 0..2"),
        ([-1], "unknown class -1"),
        (["zebra"], "unknown class 'zebra'; classes are ant, bee, cat"),
        ([1.0], "class must be an index or a name"),
        ([True], "class must be an index or a name"),
        ([1, 1], "class listed more than once: 1"),
        ([0, 1, 2], "forgets every class"),
        ("0", "classes must be a list"),
    ],
)
def test_class_request_rejections(ds, classes, message):
    with pytest.raises(ForgetRequestError, match=message):
        request_classes(ds, classes)


def test_class_request_for_class_without_training_samples():
    ds = make_dataset(labels=(0, 1, 0, 1), num_classes=3)
    with pytest.raises(ForgetRequestError, match="class 2 has no training samples"):
        request_classes(ds, [2])
    with pytest.raises(ForgetRequestError, match="removes all 4 training samples"):
        request_classes(ds, [0, 1])  # not every class, but every sample


@pytest.mark.parametrize(
    ("fraction", "seed", "message"),
    [
        (0.0, 0, "strictly between 0 and 1"),
        (1.0, 0, "strictly between 0 and 1"),
        (-0.5, 0, "strictly between 0 and 1"),
        (float("nan"), 0, "strictly between 0 and 1"),
        ("0.1", 0, "fraction must be a number"),
        (True, 0, "fraction must be a number"),
        (0.01, 0, "0.01 of 10 training samples rounds to 0"),
        (0.1, -1, "seed must be a non-negative integer"),
        (0.1, 1.5, "seed must be a non-negative integer"),
        (0.99, 0, "removes all 10 training samples"),
    ],
)
def test_random_request_rejections(ds, fraction, seed, message):
    with pytest.raises(ForgetRequestError, match=message):
        request_random(ds, fraction, seed)


def test_random_request_that_empties_a_class_names_it():
    ds = make_dataset(labels=(0, 0, 0, 0, 0, 0, 0, 0, 0, 1), num_classes=2)
    emptying = next(s for s in range(100) if 9 in np.random.default_rng(s).choice(10, 5, replace=False))
    with pytest.raises(ForgetRequestError, match=r"every training sample of class 1 \(bee\).*class request"):
        request_random(ds, 0.5, emptying)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "empty"),
        ([-1, 2, -3], "non-negative; got -3, -1"),
        ([1, 10, 11], r"2 unknown id\(s\): 10, 11 \(training ids are 0..9\)"),
        (list(range(10, 20)), "10, 11, 12, 13, 14 and 5 more"),
        ([1.5], "ids must be integers; got 1.5"),
        (["3"], "ids must be integers; got '3'"),
        ([True], "ids must be integers"),
        (7, "ids must be a list"),
        (list(range(10)), "removes all 10 training samples"),
        ([2, 5, 8], r"every training sample of class 2 \(cat\)"),
    ],
)
def test_ids_request_rejections(ds, ids, message):
    with pytest.raises(ForgetRequestError, match=message):
        request_ids(ds, ids)


def test_error_is_a_value_error(ds):
    with pytest.raises(ValueError):
        request_ids(ds, [])


# ---------------------------------------------------------------------------------------------------------
# parsing ids from text


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", []),
        ("  \n\n", []),
        ("1, 2,3", [1, 2, 3]),
        ("1 2\t3\n4\r\n5;6,", [1, 2, 3, 4, 5, 6]),
        ("\ufeff7\n8\n", [7, 8]),
        ("3\n3", [3, 3]),  # duplicates kept: request_ids reports them
        ("-4", [-4]),  # kept: request_ids reports negatives
        ("id\n5\n6\n\n7", [5, 6, 7]),
        ('name,"ID",score\nfoo,"12",0.5\nbar,13,0.1', [12, 13]),
        ("path,label\n4,cat\n9,dog", [4, 9]),  # no id column: the first one
    ],
)
def test_parse_ids_text(text, ids):
    assert parse_ids_text(text) == ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1, 2, x3", r"the pasted ids, line 1: 'x3' is not an integer id; expected whole-number training ids"),
        ("1\n2\n3.0", r"line 3: '3.0' is a decimal number; expected whole-number training ids"),
        ("1\n\n2 two", r"line 3: 'two'"),
        ("id,name\n1,a\nb,c", r"line 3: 'b'"),
        ("name,id\na,1\nb", r"line 3: 'b' has no column 'id'"),
        ("path,label\na.png,cat", r"line 2: 'a.png'"),
        ("12,cat", r"line 1: 'cat'"),  # a CSV needs a header line
    ],
)
def test_parse_ids_text_errors_name_token_and_line(text, message):
    with pytest.raises(ForgetRequestError, match=message):
        parse_ids_text(text)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(-10**12, 10**12), max_size=30),
    separators=st.lists(st.sampled_from([",", " ", "\n", "\t", ", ", ";", "\r\n", " ,\n"]), min_size=1),
)
def test_parse_ids_text_round_trips_any_separators(ids, separators):
    text = "".join(f"{i}{separators[k % len(separators)]}" for k, i in enumerate(ids))
    assert parse_ids_text(text) == ids


def test_parsed_ids_feed_a_request(ds):
    assert request_ids(ds, parse_ids_text("id\n3\n1\n")).ids == (1, 3)
