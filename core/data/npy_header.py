"""The header of one ``.npy`` array (numpy's formats 1.0 to 3.0), read without ``ast``.

numpy's own reader evaluates the header, a Python dict literal, with ``ast.literal_eval``; CPython 3.11's AST
builder is not safe beside another thread's (Streamlit parses each page for its magic when it first runs it), and
the app reads arrays in background threads and in many sessions' threads at once. This reader takes the three keys
numpy writes (``descr`` as a dtype string, ``fortran_order``, ``shape``) by pattern, and refuses anything else."""

from __future__ import annotations

import re

import numpy as np

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000  # numpy's own default limit (max_header_size)
_DESCR = re.compile(r"'descr'\s*:\s*'([^'\\]{1,64})'")
_STRUCTURED = re.compile(r"'descr'\s*:\s*\[")
_FORTRAN = re.compile(r"'fortran_order'\s*:\s*(True|False)\b")
_SHAPE = re.compile(r"'shape'\s*:\s*\(\s*((?:\d{1,19}\s*,\s*)*(?:\d{1,19}\s*,?\s*)?)\)")


class HeaderError(ValueError):
    """What was found instead of a ``.npy`` header numpy writes (a phrase for a message)."""


class StructuredDtype(HeaderError):
    """A header naming a structured dtype (a list of fields), which no reader here takes."""


def read_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of the array whose ``.npy`` bytes ``fp`` is at the start of; ``fp`` is left
    at the array's data. A :class:`HeaderError` for anything numpy would not have written (a structured dtype
    included); object dtypes are returned for the caller to refuse."""
    lead = fp.read(8)
    if len(lead) < 8 or lead[:6] != MAGIC:
        raise HeaderError("no .npy array (its first bytes are not numpy's magic)")
    major, minor = lead[6], lead[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise HeaderError(f".npy format version {major}.{minor}")
    width = 2 if major == 1 else 4
    size = int.from_bytes(fp.read(width), "little")
    if size > MAX_HEADER_BYTES:
        raise HeaderError(f"an array header of {size:,} bytes")
    raw = fp.read(size)
    if len(raw) != size:
        raise HeaderError("a truncated array header")
    text = raw.decode("utf-8" if major == 3 else "latin-1", errors="replace")
    if _STRUCTURED.search(text):
        raise StructuredDtype("a structured dtype")
    descr, fortran, shape = _DESCR.search(text), _FORTRAN.search(text), _SHAPE.search(text)
    if not (descr and fortran and shape):
        raise HeaderError(f"an array header numpy would not write ({text.strip()[:80]!r})")
    try:
        dtype = np.dtype(descr[1])
    except (TypeError, ValueError) as err:
        raise HeaderError(f"an unknown dtype {descr[1]!r}") from err
    return tuple(int(n) for n in shape[1].split(",") if n.strip()), fortran[1] == "True", dtype
