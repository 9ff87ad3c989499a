"""Text normalisation: what any text from outside (Slack, the CLI, a file) becomes before a model,
the store or the Web API sees it.

A JSON body can carry escapes no UTF-8 text can hold ("\\ud800", a lone surrogate) and control
characters a person never types (NUL, bell, escape...). Tokenizers raise on the first, SQLite
cannot store it, and the second only adds noise. `clean_text` replaces each lone surrogate with
U+FFFD (a surrogate pair left as two code points is joined into its character) and removes the C0
control characters other than newline and tab (a carriage return too: "\\r\\n" becomes "\\n").
Everything else, including other scripts and emoji, is kept as it is.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")


def clean_text(text: str | None) -> str:
    """`text` without lone surrogates (each becomes U+FFFD) and C0 control characters but \\n and \\t;
    None becomes ""."""
    if not text:
        return ""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    if _SURROGATE.search(text):
        # UTF-16 can spell a surrogate pair, so pairs join into their character; a lone one cannot.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _CONTROL.sub("", text)
