"""The one error type for input that cannot be used: the user's files, uploads, stored models, URL parameters.

Every validator in core raises :class:`InputError` (or one of its subclasses: ``DataError``,
``ForgetRequestError``, ``StoreError``, ``SweepError``) with a message that names the input as the user
knows it (their file name, not a temporary copy), the line or entry, what was found, what was expected and
how to fix it. The app shows the message in an error box; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

_SHOWN_CHARS = 60  # how much of an offending token a message quotes


class InputError(ValueError):
    """Input that cannot be used; ``str(err)`` is the whole message for the user.

    Build it from a finished sentence, or from parts: ``source`` (the user's file or parameter), ``where``
    (line, entry or member), ``found``, ``expected`` and ``fix``; the parts stay available as attributes.
    """

    def __init__(self, message: str = "", *, source: str = "", where: str = "", found: str = "",
                 expected: str = "", fix: str = "") -> None:
        self.source, self.where, self.found, self.expected, self.fix = source, where, found, expected, fix
        super().__init__(message or compose(source, where, found, expected, fix))


def compose(source: str = "", where: str = "", found: str = "", expected: str = "", fix: str = "") -> str:
    """``source, where: found; expected EXPECTED. FIX`` with the empty parts left out."""
    head = ", ".join(p for p in (source, where) if p)
    body = "; ".join(p for p in (found, f"expected {expected}" if expected else "") if p)
    text = f"{head}: {body}" if head and body else head or body
    if fix:
        text = f"{text}. {fix[0].upper()}{fix[1:]}" if text else fix
    return text if text.endswith((".", "?", "!")) or not text else text + "."


def shown(value: object, limit: int = _SHOWN_CHARS) -> str:
    """``repr`` of a user's token, cut to ``limit`` characters so that a 400-digit number or a binary line
    cannot flood a message."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
