"""Regular expressions over node names (a composite's ``match.name``) with bounded cost.

Python's ``re`` backtracks: ``(a+)+$`` takes exponential time, ``a*a*a*x`` polynomial time of a high
degree, on names of the wrong shape. Composite files and model files may come from strangers, so a
pattern is accepted only if its cost is bounded:

* at most :data:`MAX_PATTERN_CHARS` characters;
* no backreferences, lookarounds or conditionals;
* no quantifier applied to something that itself holds a quantifier or an alternation
  (``(a+)+``, ``(a|ab)*``);
* at most :data:`MAX_REPEATS` quantifiers that can repeat more than once;

and only the first :data:`MAX_NAME_CHARS` characters of a node name are searched. Together these
bound one search to about ``MAX_NAME_CHARS ** (MAX_REPEATS + 1)`` steps (well under a second).
"""
from __future__ import annotations

import re

try:  # Python >= 3.11
    from re import _constants as _c
    from re import _parser as _sre
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _sre  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 200
MAX_REPEATS = 3
MAX_NAME_CHARS = 256

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())
_FORBIDDEN = {_c.GROUPREF: "backreferences", _c.GROUPREF_EXISTS: "conditionals", _c.ASSERT: "lookarounds",
              _c.ASSERT_NOT: "lookarounds"}


def check_pattern(pattern: str) -> None:
    """Raise ValueError (with the reason) if ``pattern`` is invalid or may backtrack without bound."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"name pattern longer than {MAX_PATTERN_CHARS} characters")
    try:
        parsed = _sre.parse(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern[:80]!r}: {exc}") from None
    repeats = _check(list(parsed), inside_repeat=False)
    if repeats > MAX_REPEATS:
        raise ValueError(f"name pattern {pattern[:80]!r} has {repeats} quantifiers; at most {MAX_REPEATS} are allowed")


def search(pattern: str, name: str) -> bool:
    """``re.search`` over the first :data:`MAX_NAME_CHARS` characters of ``name``."""
    return re.search(pattern, name[:MAX_NAME_CHARS]) is not None


def _check(items, inside_repeat: bool) -> int:
    """Number of repeating quantifiers in ``items``; raises ValueError for a forbidden construct."""
    count = 0
    for op, arg in items:
        if op in _FORBIDDEN:
            raise ValueError(f"{_FORBIDDEN[op]} are not allowed in name patterns")
        if op in _REPEATS:
            _, high, body = arg
            repeating = high is _c.MAXREPEAT or high > 1
            if repeating and inside_repeat:
                raise ValueError("nested quantifiers (a quantified group holding a quantifier) are not allowed "
                                 "in name patterns")
            count += int(repeating) + _check(list(body), inside_repeat or repeating)
        elif op == _c.BRANCH:
            if inside_repeat:
                raise ValueError("a quantified alternation ((a|b)*) is not allowed in name patterns")
            count += sum(_check(list(alt), inside_repeat) for alt in arg[1])
        elif op == _c.SUBPATTERN:
            count += _check(list(arg[-1]), inside_repeat)
        elif op == getattr(_c, "ATOMIC_GROUP", None):
            count += _check(list(arg), inside_repeat)
    return count
