from __future__ import annotations

import pytest

from agi_router.exceptions import NumberFormatError
from agi_router.numbers import is_withheld, normalize_e164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0612345678", "+33612345678"),
        ("06 12 34 56 78", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("06-12-34-56-78", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+33 (0)6 12 34 56 78", "+33612345678"),
        ("+33(0)612345678", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("33612345678", "+33612345678"),
        ("612345678", "+33612345678"),
        ("0145678901", "+33145678901"),
        ("0262 12 34 56", "+262262123456"),  # La Réunion fixed
        ("0692123456", "+262692123456"),  # La Réunion mobile
        ("0690123456", "+590690123456"),  # Guadeloupe mobile
        ("0596123456", "+596596123456"),  # Martinique
        ("0594123456", "+594594123456"),  # Guyane
        ("+262692123456", "+262692123456"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 415 555 2671", "+14155552671"),
    ],
)
def test_normalize(raw: str, e164: str) -> None:
    assert normalize_e164(raw) == e164


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("061234567", "10 digits"),
        ("06123456789", "10 digits"),
        ("06 12 ab 56 78", "only digits"),
        ("+33 0012345678", r"\+33 numbers have 9 digits"),
        ("12", "no country code"),
        ("+1234", "8 to 15 digits"),
    ],
)
def test_normalize_rejects(raw: str, why: str) -> None:
    with pytest.raises(NumberFormatError, match=why):
        normalize_e164(raw)


@pytest.mark.parametrize("raw", [None, "", "anonymous", "Anonymous", "unknown", "restricted", '"private"'])
def test_withheld(raw: str | None) -> None:
    assert is_withheld(raw)


def test_not_withheld() -> None:
    assert not is_withheld("0612345678")
