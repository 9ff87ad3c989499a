"""PII redaction: applied to every piece of free text before the store writes it.

Each kind of personal data is replaced by a typed placeholder:

    [EMAIL]   e-mail addresses (also inside Slack's <mailto:...|...> links)
    [PHONE]   phone numbers: "+" international (8-15 digits), North-American (415) 555-2671 /
              415-555-2671, and trunk-prefixed national numbers such as 020 7946 0958
    [CARD]    payment card numbers, 13-19 digits, spaces or dashes allowed, *Luhn-checked*
    [IBAN]    IBANs with the country's registered length and a valid mod-97 checksum
    [IP]      IPv4 (each octet 0-255) and IPv6 addresses (validated by `ipaddress`)
    [SECRET]  secret values in URLs (?token=..., &api_key=..., X-Amz-Signature=..., user:password@)
              and well-known credential formats (Slack xox*- tokens, GitHub, Stripe, AWS keys,
              JWTs, "Bearer ..." headers)
    [USER]    Slack user mentions <@U024BE7LH> / <@U024BE7LH|name>

Near-misses are kept on purpose: numbers failing the Luhn or IBAN checksum (order numbers),
dotted numbers that are not valid IPs (999.1.1.1, versions v1.2.3.4, 2.14.1), dates, times,
prices, short local numbers (555-2671), and query parameters whose names are not secret
(?page=2, ?zipcode=...).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable

PLACEHOLDERS: dict[str, str] = {
    "user": "[USER]",
    "secret": "[SECRET]",
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "ip": "[IP]",
    "card": "[CARD]",
    "phone": "[PHONE]",
}
#: Every kind, in the order the passes run (more specific patterns first).
KINDS: tuple[str, ...] = tuple(PLACEHOLDERS)

# --- Slack mentions ---------------------------------------------------------------------------
_MENTION = re.compile(r"<@[UW][A-Z0-9]{2,}(?:\|[^>]*)?>")

# --- secrets ----------------------------------------------------------------------------------
_URL_USERINFO = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}://)[^\s/@:<>|]+:[^\s/@<>|]+@")
_QUERY_PARAM = re.compile(r"([?&#;])([A-Za-z0-9_.\-\[\]]{1,64})=([^&#\s|<>\"']+)")
_SECRET_PARTS = {
    "token", "secret", "password", "passwd", "pwd", "pass", "key", "apikey", "sig", "signature",
    "auth", "authorization", "code", "session", "sessionid", "sid", "jwt", "credential",
    "credentials", "otp", "pin", "hmac", "bearer", "ticket", "nonce",
}
_SECRET_SUBSTRINGS = ("token", "secret", "passw", "credential", "apikey", "signature")
_KNOWN_TOKENS = re.compile(
    r"\bxox[abposre]-[A-Za-z0-9-]{10,}"  # Slack bot/user/app tokens
    r"|\bxapp-\d-[A-Za-z0-9-]{10,}"  # Slack app-level tokens
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe keys
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*")

# --- e-mail -----------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,}\b"
)

# --- IBAN -------------------------------------------------------------------------------------
# Registered IBAN lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")

# --- IP addresses -----------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")

# --- numbers: cards and phones ----------------------------------------------------------------
_DIGIT_RUN = re.compile(r"(?<![\w.,/-])\d+(?:[ -]\d+)*(?!\w|[.,]\d)")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d[\d ().-]{5,22}\d\)?(?!\w)")
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]\d)"
)
_PHONE_TRUNK = re.compile(r"(?<![\w+.-])0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}(?!\w|[.-]\d)")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class _LuhnSums:
    """The Luhn checksum of any slice of a digit string in constant time (prefix sums of the digits
    and of their doubled values, by position parity), so that a long run of digit groups is scanned
    in linear time."""

    def __init__(self, digits: str):
        self.plain = [[0], [0]]  # by parity of the position: running sum of the digits
        self.doubled = [[0], [0]]  # ... of the doubled digits (minus 9 above 9)
        for p, ch in enumerate(digits):
            d = ord(ch) - 48
            dd = d * 2 - 9 if d > 4 else d * 2
            for parity in (0, 1):
                on = p % 2 == parity
                self.plain[parity].append(self.plain[parity][-1] + (d if on else 0))
                self.doubled[parity].append(self.doubled[parity][-1] + (dd if on else 0))

    def valid(self, start: int, end: int) -> bool:
        """luhn_ok(digits[start:end]): the digits an odd number of places from the end are doubled."""
        kept = (end - 1) % 2  # positions of the end digit's parity are not doubled
        total = (self.plain[kept][end] - self.plain[kept][start]
                 + self.doubled[1 - kept][end] - self.doubled[1 - kept][start])
        return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """True if `iban` (no spaces) has its country's length and a valid mod-97 checksum."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _redact_secrets(text: str, counts: Counter) -> str:
    def userinfo(m: re.Match) -> str:
        counts["secret"] += 1
        return m.group(1) + PLACEHOLDERS["secret"] + "@"

    def param(m: re.Match) -> str:
        if not _is_secret_key(m.group(2)) or m.group(3) == PLACEHOLDERS["secret"]:
            return m.group(0)
        counts["secret"] += 1
        return f"{m.group(1)}{m.group(2)}={PLACEHOLDERS['secret']}"

    def token(m: re.Match) -> str:
        counts["secret"] += 1
        return PLACEHOLDERS["secret"]

    def bearer(m: re.Match) -> str:
        counts["secret"] += 1
        return m.group(1) + PLACEHOLDERS["secret"]

    text = _URL_USERINFO.sub(userinfo, text)
    text = _QUERY_PARAM.sub(param, text)
    text = _KNOWN_TOKENS.sub(token, text)
    return _BEARER.sub(bearer, text)


def _is_secret_key(key: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    parts = [p for p in re.split(r"[^a-z0-9]+", spaced) if p]
    if any(p in _SECRET_PARTS for p in parts):
        return True
    joined = "".join(parts)
    return any(s in joined for s in _SECRET_SUBSTRINGS)


def _redact_ibans(text: str, counts: Counter) -> str:
    out: list[str] = []
    pos = 0
    for m in _IBAN_START.finditer(text):
        if m.start() < pos:
            continue
        length = IBAN_LENGTHS.get(m.group(1).upper())
        if length is None:
            continue
        # Collect `length` alphanumerics from the match start, allowing single spaces between.
        chars: list[str] = []
        i = m.start()
        while i < len(text) and len(chars) < length:
            ch = text[i]
            if ch.isascii() and ch.isalnum():
                chars.append(ch)
            elif ch == " " and chars and i + 1 < len(text) and text[i + 1].isalnum():
                pass
            else:
                break
            i += 1
        if len(chars) != length:
            continue
        if i < len(text) and text[i].isascii() and text[i].isalnum():
            continue  # part of a longer token
        if not iban_ok("".join(chars)):
            continue
        out.append(text[pos : m.start()])
        out.append(PLACEHOLDERS["iban"])
        counts["iban"] += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def _redact_ips(text: str, counts: Counter) -> str:
    def v4(m: re.Match) -> str:
        try:
            ipaddress.IPv4Address(m.group(0))
        except ValueError:
            return m.group(0)
        counts["ip"] += 1
        return PLACEHOLDERS["ip"]

    def v6(m: re.Match) -> str:
        candidate = m.group(0)
        if not any(c in "0123456789abcdefABCDEF" for c in candidate):
            return candidate
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            return candidate
        counts["ip"] += 1
        return PLACEHOLDERS["ip"]

    return _IPV6.sub(v6, _IPV4.sub(v4, text))


def _redact_cards(text: str, counts: Counter) -> str:
    def run(m: re.Match) -> str:
        s = m.group(0)
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", s)]
        digits = "".join(s[a:b] for a, b in groups)
        luhn = _LuhnSums(digits)
        first_digit, k = [], 0  # index in `digits` of each group's first digit
        for a, b in groups:
            first_digit.append(k)
            k += b - a
        first_digit.append(k)
        # Left to right, the longest span of whole digit groups that is a Luhn-valid 13-19 digit
        # number; then on after it, so that a pasted list of cards leaves none of them.
        pieces, done, i, n = [], 0, 0, len(groups)
        while i < n:
            best = None
            for j in range(i, n):
                length = first_digit[j + 1] - first_digit[i]
                if length > 19:
                    break
                if length >= 13 and luhn.valid(first_digit[i], first_digit[j + 1]):
                    best = j
            if best is None:
                i += 1
                continue
            counts["card"] += 1
            pieces += [s[done:groups[i][0]], PLACEHOLDERS["card"]]
            done, i = groups[best][1], best + 1
        return "".join(pieces) + s[done:]

    return _DIGIT_RUN.sub(run, text)


def _redact_phones(text: str, counts: Counter) -> str:
    def intl(m: re.Match) -> str:
        s = m.group(0)
        # Drop trailing groups until the number fits E.164 (at most 15 digits).
        while sum(c.isdigit() for c in s) > 15 and re.search(r"[ .-]\(?\d+\)?$", s):
            s = re.sub(r"[ .-]\(?\d+\)?$", "", s)
        digits = sum(c.isdigit() for c in s)
        if not 8 <= digits <= 15 or s.count("(") != s.count(")"):
            return m.group(0)
        counts["phone"] += 1
        return PLACEHOLDERS["phone"] + m.group(0)[len(s) :]

    def plain(m: re.Match) -> str:
        counts["phone"] += 1
        return PLACEHOLDERS["phone"]

    def trunk(m: re.Match) -> str:
        if not 10 <= sum(c.isdigit() for c in m.group(0)) <= 11:
            return m.group(0)
        counts["phone"] += 1
        return PLACEHOLDERS["phone"]

    text = _PHONE_INTL.sub(intl, text)
    text = _PHONE_NANP.sub(plain, text)
    return _PHONE_TRUNK.sub(trunk, text)


def _simple(pattern: re.Pattern, kind: str) -> Callable[[str, Counter], str]:
    def apply(text: str, counts: Counter) -> str:
        def sub(m: re.Match) -> str:
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return pattern.sub(sub, text)

    return apply


_PASSES: dict[str, Callable[[str, Counter], str]] = {
    "user": _simple(_MENTION, "user"),
    "secret": _redact_secrets,
    "email": _simple(_EMAIL, "email"),
    "iban": _redact_ibans,
    "ip": _redact_ips,
    "card": _redact_cards,
    "phone": _redact_phones,
}


class Redactor:
    """Replaces personal data in text by typed placeholders; `kinds` selects which passes run."""

    def __init__(self, kinds: Iterable[str] | None = None):
        selected = KINDS if kinds is None else tuple(kinds)
        unknown = sorted(set(selected) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown redaction kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
        self.kinds: tuple[str, ...] = tuple(k for k in KINDS if k in selected)

    def redact_with_counts(self, text: str) -> tuple[str, dict[str, int]]:
        counts: Counter = Counter()
        for kind in self.kinds:
            text = _PASSES[kind](text, counts)
        return text, dict(counts)

    def __call__(self, text: str | None) -> str | None:
        if not text or not self.kinds:
            return text
        return self.redact_with_counts(text)[0]

    def __repr__(self) -> str:
        return f"Redactor(kinds={self.kinds!r})"


_DEFAULT = Redactor()


def redact(text: str | None, kinds: Iterable[str] | None = None) -> str | None:
    """Redact every kind (or only `kinds`) of personal data in `text`."""
    return _DEFAULT(text) if kinds is None else Redactor(kinds)(text)
