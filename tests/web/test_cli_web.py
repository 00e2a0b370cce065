"""`repmon web` refuses a bad start in one line with a non-zero exit, never a traceback; tokens
are parsed strictly and give the scopes they say."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import repmon
from web.auth import TokenError, Tokens, check_bind


def test_an_open_web_view_off_loopback_is_refused_in_one_line() -> None:
    env = {"REPMON_WEB_READ_TOKENS": "", "REPMON_WEB_WRITE_TOKENS": "", "REPMON_REDIS__URL": "redis://127.0.0.1:1/0"}
    out = repmon("web", "--host", "0.0.0.0", env=env)
    assert out.returncode == 2, out
    assert "web.host=0.0.0.0 is not a loopback address and no token is configured" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REPMON_WEB_READ_TOKENS": "just-a-token"}, "REPMON_WEB_READ_TOKENS: write name:token pairs"),
        ({"REPMON_WEB_WRITE_TOKENS": "alice:short"}, "the token of 'alice' is shorter than 16 characters"),
    ],
)
def test_bad_token_variables_name_the_variable_and_the_fix(env: dict[str, str], says: str) -> None:
    with pytest.raises(TokenError, match=says):
        Tokens.from_env(env)


def test_scopes_and_binds() -> None:
    t = Tokens.from_env({"REPMON_WEB_READ_TOKENS": "bob:" + "r" * 20, "REPMON_WEB_WRITE_TOKENS": "alice:" + "w" * 20})
    reader, writer = t.principal("r" * 20), t.principal("w" * 20)
    assert reader is not None and reader.name == "bob" and reader.can("read") and not reader.can("write")
    assert writer is not None and writer.name == "alice" and writer.can("write") and writer.can("read")
    assert t.principal("x" * 20) is None and t.principal(None) is None
    assert check_bind("0.0.0.0", t) is None  # tokens configured: any address may be bound
    open_view = Tokens.from_env({})
    assert open_view.open and check_bind("127.0.0.1", open_view) is None and check_bind("::1", open_view) is None
    assert check_bind("10.0.0.5", open_view) is not None
