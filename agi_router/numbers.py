"""Telephone numbers: the usual French and international forms normalised to E.164.

Accepted: ``06 12 34 56 78``, ``06.12.34.56.78``, ``0612345678``, ``+33 6 12 34 56 78``,
``+33 (0)6 12 34 56 78``, ``0033612345678``, ``33612345678`` and any ``+CC…`` E.164 number.
French overseas departments dialled nationally (``0262…``, ``0690…``) get their own country
code (+262, +590, +594, +596), as ARCEP's numbering plan assigns them.
"""

from __future__ import annotations

import re

from .exceptions import NumberFormatError

__all__ = ["is_withheld", "normalize_e164"]

# National prefixes (after the trunk 0) that belong to overseas country codes.
_DOM_PREFIXES: dict[str, str] = {
    "262": "262",
    "263": "262",
    "692": "262",
    "693": "262",  # La Réunion
    "269": "262",
    "639": "262",  # Mayotte
    "590": "590",
    "690": "590",
    "691": "590",  # Guadeloupe, St-Martin, St-Barthélemy
    "594": "594",
    "694": "594",  # Guyane
    "596": "596",
    "696": "596",
    "697": "596",  # Martinique
}
_SEPARATORS = re.compile(r"[\s.\-/()\u00a0]")
_WITHHELD = {"", "anonymous", "unknown", "restricted", "private", "withheld", "unavailable"}


def is_withheld(raw: str | None) -> bool:
    """True when a caller ID carries no usable number (withheld, anonymous, empty)."""
    return raw is None or raw.strip().strip('"').lower() in _WITHHELD


def normalize_e164(raw: str) -> str:
    """Return ``raw`` as ``+<digits>``; raise :class:`NumberFormatError` with the reason."""
    if raw is None or not raw.strip():
        raise NumberFormatError("empty number")
    s = raw.strip().replace("+33(0)", "+33").replace("+33 (0)", "+33 ")
    s = _SEPARATORS.sub("", s)
    if s.startswith("+"):
        digits = s[1:]
        plus = True
    else:
        digits = s
        plus = False
    if not digits.isdigit():
        raise NumberFormatError(f"{raw!r}: only digits, spaces, dots, dashes and a leading + are allowed")
    if plus:
        e164 = digits
    elif digits.startswith("00"):
        e164 = digits[2:]
    elif digits.startswith("0"):
        if len(digits) != 10:
            raise NumberFormatError(f"{raw!r}: a French national number has 10 digits, not {len(digits)}")
        cc = _DOM_PREFIXES.get(digits[1:4], "33")
        e164 = cc + digits[1:]
    elif digits.startswith("33") and len(digits) == 11:
        e164 = digits
    elif len(digits) == 9 and digits[0] in "123456789":
        # Asterisk trunks often strip the trunk prefix: 612345678
        e164 = _DOM_PREFIXES.get(digits[:3], "33") + digits
    else:
        raise NumberFormatError(f"{raw!r}: not a French national number and no country code")
    if e164.startswith("33"):
        national = e164[2:]
        if national.startswith("0"):
            national = national[1:]
        if len(national) != 9 or national[0] == "0":
            raise NumberFormatError(f"{raw!r}: +33 numbers have 9 digits after the country code")
        cc = _DOM_PREFIXES.get(national[:3], "33")
        e164 = cc + national
    if not 8 <= len(e164) <= 15:
        raise NumberFormatError(f"{raw!r}: E.164 numbers have 8 to 15 digits, not {len(e164)}")
    return "+" + e164
