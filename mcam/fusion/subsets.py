"""Cue-subset specs: registry names, the paper's aliases (F, U, I, I+, A) and its 'all but' notation A_{-i+,-u}."""
from __future__ import annotations

import re
from typing import Sequence

from mcam.errors import InputError

# The paper's cue letters -> detector registry names.
ALIASES: dict[str, str] = {"f": "vgg", "u": "au", "i": "micro", "i+": "micro_plus", "a": "macro"}
_ALL_BUT = re.compile(r"^(?:a|all)\s*(?:_\s*\{(?P<minus>[^}]*)\}|_(?P<single>-[\w+]+))?$", re.IGNORECASE)


def cue_name(token: str) -> str:
    """A registry name for a cue token: aliases F/U/I/I+/A map to vgg/au/micro/micro_plus/macro."""
    token = token.strip()
    return ALIASES.get(token.lower(), token)


def parse_cues(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Cue names selected by `spec` (a list keeps its own order, 'all'/'all but' the order of `available`).

    `spec` is None or 'all' or 'A' (every available cue), 'A_{-i+,-u}' (all but I+ and U),
    a comma-separated string 'vgg,au' or a list of names/aliases ('A' inside a list is the macro cue).
    """
    available = list(available)
    if spec is None:
        return available
    if isinstance(spec, str):
        match = _ALL_BUT.match(spec.strip())
        if match:
            minus_text = match.group("minus") or match.group("single") or ""
            minus = [t for t in (s.strip() for s in minus_text.split(",")) if t]
            if any(not t.startswith("-") for t in minus):
                raise InputError(f"cue subset {spec!r}: every item after A_ must be '-<cue>', e.g. A_{{-i+,-u}}")
            dropped = [cue_name(t[1:]) for t in minus]
            _check(dropped, available, spec)
            return [c for c in available if c not in dropped]
        spec = [s for s in spec.split(",") if s.strip()]
    names = [cue_name(s) for s in spec]
    _check(names, available, spec)
    if len(set(names)) != len(names):
        raise InputError(f"cue subset {spec!r} names a cue twice")
    return names


def _check(names: Sequence[str], available: Sequence[str], spec: object) -> None:
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(f"cue subset {spec!r}: unknown cue(s) {unknown}; available: {list(available)} "
                         f"(aliases: {', '.join(f'{k.upper()}={v}' for k, v in ALIASES.items())})")
