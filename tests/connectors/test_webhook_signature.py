from __future__ import annotations

import pytest

from connectors.seen import MemorySeen, SeenCacheError
from connectors.webhook import SignatureError, parse_header, sign, verify

BODY = b'[{"kind": "review", "text": "late again"}]'
T = 1_800_000_000
MAC = "0" * 64


def test_a_signed_body_verifies_and_rotation_accepts_either_secret() -> None:
    header = sign(BODY, b"new", timestamp=T)
    assert verify(BODY, header, [b"old", b"new"], now=T + 10, tolerance=300) == header.split("v1=")[1]
    verify(BODY, sign(BODY, b"old", timestamp=T), [b"old", b"new"], now=T, tolerance=300)
    verify(BODY, sign(BODY, b"k", timestamp=T + 20), [b"k"], now=T, tolerance=300)  # small clock skew is fine


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (BODY, None, "missing"),
        (BODY, "v1=abc", "no valid t"),
        (BODY + b" ", sign(BODY, b"k", timestamp=T), "does not match"),  # tampered body
        (BODY, sign(BODY, b"wrong", timestamp=T), "does not match"),
        (BODY, sign(BODY, b"k", timestamp=T - 301), "301 s off"),  # a captured request, replayed later
        (BODY, sign(BODY, b"k", timestamp=T).replace(f"t={T}", f"t={T + 1}"), "does not match"),  # t changed
        # pre-signed for the future: would stay valid for longer than the tolerance
        (BODY, sign(BODY, b"k", timestamp=T + 3600), "in the future"),
    ],
)
def test_bad_signatures_are_refused_with_the_reason(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(body, header, [b"k"], now=T, tolerance=300)


@pytest.mark.parametrize(
    "header",
    [
        f"t={T},v1={'é' * 64}",  # non-ASCII digest: compare_digest raised TypeError -> 500
        f"t={T},v1={MAC[:-1]}\u00e9",
        f"t=\uff11\uff12\uff13,v1={MAC}",  # full-width digits: int() accepted them
        f"t={T},v1={MAC.upper()}",
        f"t={T},v1={MAC}0",
        f"t={T},t={T},v1={MAC}",
        f"t=-5,v1={MAC}",
        f"t= {T},v1={MAC}",
        f"t={T}",
        f"t={T};v1={MAC}",
        "",
        "x" * 5000,
    ],
)
def test_malformed_signature_headers_are_signature_errors(header: str) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header, [b"k"], now=T, tolerance=300)


def test_unknown_schemes_are_ignored_and_several_digests_accepted() -> None:
    good = sign(BODY, b"k", timestamp=T).split("v1=")[1]
    t, macs = parse_header(f"t={T},v0=legacy,v1={MAC},v1={good}")
    assert t == T and macs == [MAC, good]
    verify(BODY, f"t={T},v0=legacy,v1={MAC},v1={good}", [b"k"], now=T, tolerance=300)


async def test_memory_replay_cache_is_once_per_ttl_bounded_and_releasable() -> None:
    now = [0.0]
    seen = MemorySeen(max_entries=2, clock=lambda: now[0])
    assert await seen.reserve("a", 10) == "new"
    assert await seen.reserve("a", 10) == "pending"
    await seen.done("a")
    assert await seen.reserve("a", 10) == "done"
    assert await seen.reserve("b", 10) == "new"
    await seen.release("b")  # producing failed: the sender's retry is accepted
    assert await seen.reserve("b", 10) == "new"
    with pytest.raises(SeenCacheError, match="full"):  # never forgets a live signature to make room
        await seen.reserve("c", 10)
    now[0] = 10.5
    assert await seen.reserve("c", 10) == "new" and len(seen) == 1  # expired ones are pruned
    assert await seen.reserve("a", 10) == "new"
