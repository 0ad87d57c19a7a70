"""Shared links: ?dataset= and ?classes= set up a session; a bad parameter is named and ignored."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def opened(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_a_link_picks_the_dataset_and_prefills_the_forget_page(spm_model, parametric_model):
    at = opened({"dataset": "digits", "classes": "3,5,3"})
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="sidebar-dataset").value == "digits"
    at.switch_page("pages/forget.py").run()
    assert not at.exception, at.exception
    assert "forget-kind" in [r.key for r in at.radio], ([m.value for m in at.markdown], [w.value for w in at.warning])
    assert at.radio(key="forget-kind").value == "classes"
    assert at.multiselect(key="forget-classes").value == [3, 5]


def test_a_bad_link_is_named_and_ignored(spm_model, parametric_model):
    at = opened({"dataset": "digits", "model": "resnet-9000"})
    assert not at.exception, at.exception
    warnings = [w.value for w in at.sidebar.warning]
    assert any("resnet-9000" in w and "ignored" in w for w in warnings), warnings
    at = opened({"dataset": "digits", "classes": "seven"})  # digits' classes are named "0".."9"
    warnings = [w.value for w in at.sidebar.warning]
    assert any("seven" in w and "classes were ignored" in w for w in warnings), warnings


def test_a_bad_link_stays_named_until_dismissed(spm_model, parametric_model):
    """The warning outlives the page's next full runs (a model loading reruns it at once), then goes when the user
    dismisses it; picking another dataset also answers it."""
    at = opened({"dataset": "../../etc/passwd"})
    assert not at.exception, at.exception
    expected = "unknown dataset '../../etc/passwd'"
    for _ in range(2):
        warnings = [w.value for w in at.sidebar.warning]
        assert any(expected in w and "ignored" in w for w in warnings), warnings
        at.run()
    at.sidebar.button(key="link-warnings-dismiss").click().run()
    assert not any(expected in w.value for w in at.sidebar.warning)
    at = opened({"classes": "seven", "dataset": "digits"})
    at.run()
    assert any("seven" in w.value for w in at.sidebar.warning)
    at.sidebar.selectbox(key="sidebar-dataset").select("mnist-5k").run()
    assert not at.exception, at.exception
    assert not any("seven" in w.value for w in at.sidebar.warning)
