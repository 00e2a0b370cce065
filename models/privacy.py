"""Personal data: redaction patterns and pseudonymous keys.

Redaction runs at enrichment, before anything is stored or published: emails, phone numbers,
card-like numbers (Luhn-checked), URLs with a query string (tokens, session ids) lose their
secrets, and @handles that are not tracked entities become ``@user``. Authors are replaced by a
keyed hash, stable for a given secret (``REPMON_AUTHOR_KEY_SECRET``), so a responder can see that
ten complaints came from one account without seeing who it is.
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from collections.abc import Collection

__all__ = ["luhn_ok", "name_spans", "pseudonymize", "redact", "redact_payload", "redact_url"]

# Every pattern starts where a run of its characters starts (a lookbehind) and bounds its
# repeats: on a megabyte of word characters an unanchored ``[\w.-]*name[\w.-]*`` backtracks from
# every position (quadratic: minutes for 64 KiB), and one such message would stall a worker.
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
URL_QUERY = re.compile(r"\b(https?://[^\s?#\"]+)\?[^\s#\"]+")  # a quote ends a URL (never unescaped in one)
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])"  # not inside a longer number
    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}"
    r"(?![ .-]?\d)(?!\w)"
)
HANDLE = re.compile(r"(?<![\w@])@(\w{1,30})")
# what CARD and PHONE need at least (Unicode digits, as theirs): thirteen digits with at most one
# separator between two, and two runs of three with at most one between them; a text or URL
# without them is not scanned with the lookbehinds at every position
_CARD_CORE = re.compile(r"\d(?:[ -]?\d){12}")
_PHONE_CORE = re.compile(r"\d{3}[ .-]?\d{3}")
# the value of a JSON member or key=value pair: quoted (to its closing quote: a secret or a name
# may hold spaces) or bare (to the next separator)
_VALUE = r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^"'\s,&{}\[\]]+)"""
# a member whose name says it holds a credential or a session
SECRET_FIELD = re.compile(
    rf"""(?ix)
    ( (?<![\w.-]) ["']?[\w.-]{{0,40}}?
      (?:token|secret|passw(?:or)?d|session|api[_-]?key|auth(?!or(?!iz))(?:orization)?|cookie|credential)[\w.-]{{0,40}}["']?
      \s*[:=]\s* )
    {_VALUE}
    """
)
# a member whose name says it holds a person: a handle, a display name, a reviewer
PERSON_FIELD = re.compile(
    rf"""(?ix)
    ( (?<![\w.-]) ["']?
      (?:(?:author|user|reviewer|consumer|customer|buyer|respondent|first|last|full|display|screen|nick|real
          |given|family|sur)(?:[_-]?(?:name|handle|login))?|name|handle|login)["']?
      \s*[:=]\s* )
    ({_VALUE})
    """
)


# Names a text gives away without a trained NER model (the fast profile): the capitalised words
# after a greeting, a thanks, a sign-off or "my name is", in en/es/pt/de/fr, and a signature line
# ("- Maria", "^JK" or "*TJF" agent initials in customer-care replies).
_UPPER = "A-ZÀ-ÖØ-Þ"
_NAME = rf"[{_UPPER}][a-zß-öø-ÿ'\u2019-]+(?:[ ][{_UPPER}][a-zß-öø-ÿ'\u2019-]+){{0,2}}"
_LEAD = (
    r"hi|hello|hey|dear|thanks|thank\s+you|thx|regards|cheers|sincerely|"
    r"hola|gracias|saludos|estimad[oa]|olá|ola|oi|obrigad[oa]|prezad[oa]|atenciosamente|"
    r"hallo|danke|grüße|gruß|liebe[r]?|bonjour|salut|merci|cordialement|"
    r"my\s+name\s+is|me\s+llamo|mi\s+nombre\s+es|meu\s+nome\s+é|je\s+m['\u2019]appelle|ich\s+heiße|mein\s+name\s+ist"
)
# the first letters of the lead words, as a lookahead: the regex engine tries the ~35 lead words
# at every word start of every text, and most word starts rule them all out by their first letter
# (a third of the cost of name_spans; the same matches, since every lead word starts with one)
_LEAD_FIRSTS = "".join(sorted({lead[0] for lead in _LEAD.split("|")}))
NAME_AFTER = re.compile(rf"(?<!\w)(?=(?i:[{_LEAD_FIRSTS}]))(?i:{_LEAD})[ \t]*[,:]?[ \t]+(?P<name>{_NAME})")
SIGNATURE = re.compile(
    rf"(?:^|(?<=\s))(?:[-\u2013\u2014~][ \t]*(?P<name>{_NAME})[ \t]*$|[\^*](?P<initials>[A-Z]{{2,3}})\b)", re.M
)
_SIGN_MARKS = frozenset("-\u2013\u2014~^*")
NOT_NAMES = frozenset(
    {
        *("all", "everyone", "everybody", "team", "there", "guys", "folks", "again", "so", "much", "sir", "madam"),
        *("customer", "customers", "support", "friend", "friends", "todos", "todas", "equipe", "equipo"),
        *("amigos", "tout", "monde", "alle", "leute", "mate", "buddy", "man", "dude", "lol", "god"),
        *("i", "i'm", "i'll", "i've", "i'd", "my", "we", "we're", "we'll", "you", "your", "our", "it", "this"),
        *("that", "please", "sorry", "yes", "no", "ok", "okay"),
    }
)


def name_spans(text: str, exclude: Collection[str] = ()) -> list[tuple[int, int]]:
    """Spans of person names the wording gives away (see ``NAME_AFTER``), except words in
    ``exclude`` (lower case: tracked brand names, "Thanks Northwind" names no person) and
    ``NOT_NAMES`` ("Hi All").

    >>> t = "Hi Maria, my flight was cancelled. Thanks Northwind! Regards, João Silva"
    >>> [t[a:b] for a, b in name_spans(t, {"northwind"})]
    ['Maria', 'João Silva']
    >>> t = "We'll DM you the details ^JK"
    >>> [t[a:b] for a, b in name_spans(t)]
    ['JK']
    """
    out: list[tuple[int, int]] = []
    signed = not _SIGN_MARKS.isdisjoint(text)  # what SIGNATURE needs: a scan fewer for most texts
    for m in [*NAME_AFTER.finditer(text), *(SIGNATURE.finditer(text) if signed else ())]:
        group = "initials" if m.groupdict().get("initials") else "name"
        a, b = m.span(group)
        words = text[a:b].split()
        while words and (words[-1].lower() in NOT_NAMES or words[-1].lower() in exclude):
            b = a + text[a:b].rfind(words.pop())  # "Thanks John Team" keeps John
            b = a + len(text[a:b].rstrip())
        if words and words[0].lower() not in NOT_NAMES and text[a:b].lower() not in exclude:
            out.append((a, b))
    return sorted(set(out))


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a card-like number.

    >>> luhn_ok("4111 1111 1111 1111"), luhn_ok("4111 1111 1111 1112")
    (True, False)
    """
    ds = [int(c) for c in digits if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(ds)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return len(ds) >= 13 and total % 10 == 0


def redact(text: str, keep_handles: Collection[str] = ()) -> tuple[str, Counter[str]]:
    """Replace personal data in ``text``; returns the text and counts per kind.

    >>> redact("mail a.b@example.com, call +1 415 555 1234, card 4111-1111-1111-1111 @bob @acme", {"acme"})[0]
    'mail [EMAIL], call [PHONE], card [CARD] @user @acme'
    >>> redact("see https://t.example/x?token=abc123 now")[0]
    'see https://t.example/x?[REDACTED] now'
    """
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], repl: str, kind: str, s: str) -> str:
        def f(m: re.Match[str]) -> str:
            counts[kind] += 1
            return m.expand(repl) if "\\" in repl else repl

        return pattern.sub(f, s)

    # each pattern needs a character most texts lack ("://" and "?", "@", a digit): testing for
    # it first skips a scan of the whole text with lookbehinds at every position, same result
    out = text
    if "://" in out and "?" in out:
        out = sub(URL_QUERY, r"\1?[REDACTED]", "url", out)
    if "@" in out:
        out = sub(EMAIL, "[EMAIL]", "email", out)

    def card(m: re.Match[str]) -> str:
        if luhn_ok(m.group(0)):
            counts["card"] += 1
            return "[CARD]"
        return m.group(0)

    if _CARD_CORE.search(out) is not None:
        out = CARD.sub(card, out)
    if _PHONE_CORE.search(out) is not None:
        out = sub(PHONE, "[PHONE]", "phone", out)
    if "@" not in out:
        return out, counts
    # a frozenset is taken as already normalised: the enricher builds it once for all its texts
    # (rebuilding it per text cost 69 % of enrichment at 10,000 tracked entities)
    keep = keep_handles if isinstance(keep_handles, frozenset) else {h.lower().lstrip("@") for h in keep_handles}

    def handle(m: re.Match[str]) -> str:
        if m.group(1).lower() in keep:
            return m.group(0)
        counts["handle"] += 1
        return "@user"

    out = HANDLE.sub(handle, out)
    return out, counts


def redact_url(url: str | None) -> str | None:
    """A URL with its query redacted (it often carries sessions, tokens or e-mail addresses).

    >>> redact_url("https://shop.example/r/9?session=abc&email=a%40b.c#frag")
    'https://shop.example/r/9?[REDACTED]#frag'
    >>> redact_url("https://news.example/a/1"), redact_url(None)
    ('https://news.example/a/1', None)
    """
    if url is None:
        return None
    return redact(url)[0]


def redact_payload(text: str, secret: bytes | None = None) -> str:
    """What a dead letter keeps of a message: what enrichment redacts (:func:`redact`, the person
    names of :func:`name_spans`), credential-looking members, and person-looking members (an
    ``author``, a ``reviewer``, a ``display_name``) replaced by their pseudonymous key when
    ``secret`` is given (the one enrichment keys authors with: an operator can still tie a dead
    letter to an author's other events), else ``[PERSON]``.

    >>> redact_payload('{"text": "mail me at a@b.io", "session_token": "s3 cr3t", "api_key":"k1"}')
    '{"text": "mail me at [EMAIL]", "session_token": "[REDACTED]", "api_key":"[REDACTED]"}'
    >>> redact_payload('{"author": "Maria K.", "text": "Hi Maria, it broke", "consumer": {"displayName": "Ann Lee"}}')
    '{"author": "[PERSON]", "text": "Hi [PERSON], it broke", "consumer": {"displayName": "[PERSON]"}}'
    >>> redact_payload('{"reviewer": {"name": "Ann Lee"}, "Authorization": "Basic dXNlcjpwdw==", "author_key": "a_1"}')
    '{"reviewer": {"name": "[PERSON]"}, "Authorization": "[REDACTED]", "author_key": "a_1"}'
    >>> redact_payload('{"author": "Maria K."}', b"s") == '{"author": "' + pseudonymize("Maria K.", b"s") + '"}'
    True
    """

    def person(m: re.Match[str]) -> str:
        value = m.group(2)
        quote = value[0] if value[:1] in "\"'" else ""
        raw = value[1:-1] if quote else value
        if not raw.strip() or raw in ("null", "true", "false"):
            return m.group(0)
        key = pseudonymize(raw, secret) if secret is not None else "[PERSON]"
        return f"{m.group(1)}{quote}{key}{quote}" if quote else f"{m.group(1)}{key}"

    def quoted_secret(m: re.Match[str]) -> str:
        whole = m.group(0)
        head = m.group(1)
        value = whole[len(head) :]
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{head}{quote}[REDACTED]{quote}"

    out = SECRET_FIELD.sub(quoted_secret, text)
    out = PERSON_FIELD.sub(person, out)
    for a, b in reversed(name_spans(out)):
        out = out[:a] + "[PERSON]" + out[b:]
    return redact(out)[0]


def pseudonymize(value: str, secret: bytes) -> str:
    """Stable pseudonymous key of ``value`` (HMAC-SHA256, 16 hex digits).

    >>> pseudonymize("jnardino", b"s") == pseudonymize("jnardino", b"s") != pseudonymize("jnardino", b"t")
    True
    >>> pseudonymize("jnardino", b"s").startswith("a_")
    True
    """
    # the one-shot digest: a third of the cost of an HMAC object, the same bytes
    return "a_" + hmac.digest(secret, value.strip().lower().encode(), "sha256").hex()[:16]
