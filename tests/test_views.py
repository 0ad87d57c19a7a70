"""Views drawn as text: a Markdown table shows each cell's text as it is."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from core.views import markdown_table
from tests.apptables import markdown_cells, markdown_frame

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(
    lambda s: s.strip() == s and len(s.splitlines()) == 1)
NUMBER = st.floats(allow_nan=True, allow_infinity=False, width=32) | st.none()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TEXT, NUMBER), min_size=1, max_size=5))
def test_property_markdown_table_keeps_each_cells_text(cells):
    """Any text (pipes, dollars, backslashes, Markdown markup) comes back as written; numbers to 2 decimals; a
    missing number (None, NaN) is an empty cell."""
    rows = [{"meaning": text, "value": value} for text, value in cells]
    header, *read = markdown_cells(markdown_table(rows))
    assert header == ["meaning", "value"] and len(read) == len(cells)
    for (text, value), (got_text, got_value) in zip(cells, read):
        assert got_text == text
        assert got_value == ("" if value is None or math.isnan(value) else f"{value:.2f}")


def test_markdown_table_escapes_markup_and_line_breaks():
    table = markdown_table([{"metric": "FA", "before": 98.123, "after": float("nan"), "n": 3,
                             "meaning": "a|b $x$ D_f *k* [l](u)\nnext\u2028line"}])
    assert table.splitlines() == ["| metric | before | after | n | meaning |", "|---|---:|---:|---:|---|",
                                  r"| FA | 98.12 |  | 3 | a\|b \$x\$ D\_f \*k\* \[l\](u) next line |"]
    frame = markdown_frame(table)
    assert frame.loc[0, "before"] == 98.12 and math.isnan(frame.loc[0, "after"]) and frame.loc[0, "n"] == 3
    assert frame.loc[0, "meaning"] == "a|b $x$ D_f *k* [l](u) next line"
