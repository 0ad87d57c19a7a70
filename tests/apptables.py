"""Reading back what the pages draw as Markdown tables (``core.views.markdown_table``) in AppTests."""

import re

import pandas as pd

ESCAPED = re.compile(r"\\(.)")
CELL_BORDER = re.compile(r"(?<!\\)\|")  # a cell border: a pipe markdown_table did not escape


def markdown_cells(text: str) -> list[list[str]]:
    """A Markdown table's header and rows, each cell's text with its escapes undone."""
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [lines[0]] + lines[2:]  # the second line is the header's rule
    return [[ESCAPED.sub(r"\1", cell.strip()) for cell in CELL_BORDER.split(line)[1:-1]] for line in lines]


def markdown_frame(text: str) -> pd.DataFrame:
    """A Markdown table as a DataFrame: a column whose cells are all numbers or empty holds floats (NaN when
    empty)."""
    header, *rows = markdown_cells(text)
    frame = pd.DataFrame(rows, columns=header)
    for column in frame.columns:
        numbers = pd.to_numeric(frame[column].replace("", None), errors="coerce")
        if numbers.notna().sum() == (frame[column] != "").sum():
            frame[column] = numbers.astype(float)
    return frame


def metrics_frame(at) -> pd.DataFrame:
    """The Predictions page's metrics table."""
    (table,) = [m.value for m in at.main.markdown if m.value.startswith("| metric |")]
    return markdown_frame(table)
