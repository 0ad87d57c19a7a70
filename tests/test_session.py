"""A session's request history: union, undo, and by-design models edited per session only."""

import numpy as np
import pytest

from core.data import ForgetRequestError, request_classes, request_ids
from core.session import ForgetSession, merge_requests


def test_merging_classes_stays_a_class_request(digits):
    merged = merge_requests(digits, request_classes(digits, [0]), request_classes(digits, [2]))
    assert merged.classes == (0, 2) and merged.kind == "class"


def test_merging_ids_is_the_union(digits):
    merged = merge_requests(digits, request_ids(digits, [1, 2]), request_ids(digits, [2, 3]))
    assert merged.ids == (1, 2, 3) and "+" in merged.description
    with pytest.raises(ForgetRequestError, match="already"):
        merge_requests(digits, merged, request_ids(digits, [3]))


def test_history_undo_and_reset(digits, spm_model):
    session = ForgetSession(digits.fingerprint())
    session.push(digits, request_classes(digits, [0]))
    first = session.apply_by_design("spm", spm_model).model
    assert first.counts[0] == 0
    with pytest.raises(ForgetRequestError, match="cannot be added together"):
        session.push(digits, request_ids(digits, [5]), add_to_current=True)
    session.push(digits, request_classes(digits, [4]), add_to_current=True)
    assert session.current.classes == (0, 4) and len(session.history) == 2
    assert session.undo().classes == (0,)
    assert session.apply_by_design("spm", spm_model).model.counts[0] == 0
    session.reset()
    assert session.current is None and session.apply_by_design("spm", spm_model) is None
    assert np.all(spm_model.counts > 0)  # the shared original never changed


def test_sessions_forgetting_the_same_set_share_one_edited_model_and_time_their_own_deletion(digits, spm_model):
    import gc

    first, second, other = (ForgetSession(digits.fingerprint()) for _ in range(3))
    for session, classes in ((first, [3]), (second, [3]), (other, [4])):
        session.push(digits, request_classes(digits, classes))
    a, b, c = (s.apply_by_design("spm", spm_model) for s in (first, second, other))
    assert a.model is b.model and a is not b  # one model, each session's own deletion and its time
    assert a.seconds > 0 and b.seconds > 0
    assert c.model is not a.model and c.model.counts[3] > 0 and a.model.counts[3] == 0
    first.reset()
    second.undo()
    del a, b
    gc.collect()
    assert request_classes(digits, [3]).key() not in spm_model._shared_deletions  # none holds it: freed
    assert np.all(spm_model.counts > 0)


def test_a_request_for_another_dataset_is_refused(digits):
    session = ForgetSession("another-fingerprint")
    with pytest.raises(ForgetRequestError, match="another dataset"):
        session.push(digits, request_classes(digits, [0]))


def test_a_browser_sessions_state_keeps_one_history_per_dataset_and_shares_none(digits):
    from pages.state import SessionState

    first, second = SessionState(), SessionState()
    first.deletions_for(digits).push(digits, request_classes(digits, [1]))
    assert first.deletions_for(digits) is first.deletions_for(digits)
    assert first.deletions_for(digits).current.classes == (1,)
    assert second.deletions_for(digits).current is None and second.id != first.id
    first.embeddings.selection.append("train:3")
    assert second.embeddings.selection == [] and second.method_runs == {} and second.uploads == {}
