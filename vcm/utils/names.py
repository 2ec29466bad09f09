"""Close matches for a misspelled name: the "did you mean" of every error that names the valid ones."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, valid: Iterable[str], limit: int = 3) -> list[str]:
    """The valid names closest to ``name``, best first (difflib's ratio >= 0.6, case-insensitive).

    Args:
        name: what the user typed.
        valid: the names that exist.
        limit: most names returned.
    """
    valid = sorted({str(v) for v in valid})
    by_lower = {v.lower(): v for v in valid}
    found = difflib.get_close_matches(str(name).lower(), list(by_lower), n=limit, cutoff=0.6)
    return [by_lower[f] for f in found]


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` or ``" (did you mean 'x' or 'y'?)"``; empty when nothing is close.

    Meant to follow the "no such ..." part of a message, before the list of valid names.
    """
    found = close_matches(name, valid)
    if not found:
        return ""
    return " (did you mean " + " or ".join(repr(f) for f in found) + "?)"
