from __future__ import annotations

import pytest

from connectors.webhook import SignatureError, sign, verify

BODY = b'[{"kind": "review", "text": "late again"}]'
T = 1_800_000_000


def test_a_signed_body_verifies_and_rotation_accepts_either_secret() -> None:
    header = sign(BODY, b"new", timestamp=T)
    verify(BODY, header, [b"old", b"new"], now=T + 10, tolerance=300)
    verify(BODY, sign(BODY, b"old", timestamp=T), [b"old", b"new"], now=T, tolerance=300)


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (BODY, None, "missing"),
        (BODY, "v1=abc", "no valid t"),
        (BODY + b" ", sign(BODY, b"k", timestamp=T), "does not match"),  # tampered body
        (BODY, sign(BODY, b"wrong", timestamp=T), "does not match"),
        (BODY, sign(BODY, b"k", timestamp=T - 301), "301 s off"),  # a captured request, replayed later
        (BODY, sign(BODY, b"k", timestamp=T).replace(f"t={T}", f"t={T + 1}"), "does not match"),  # t changed
    ],
)
def test_bad_signatures_are_refused_with_the_reason(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(body, header, [b"k"], now=T, tolerance=300)
