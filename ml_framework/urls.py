"""URLs shown to people: a database password never reaches a terminal, a log, a tracking server or
a file. Torch- and SQLAlchemy-free, so every layer can use it."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(://[^/:@?#]*):[^/]*@")  # up to the host's '@', even with '@' in the password
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def mask_url(url: str) -> str:
    """`url` with its password (`user:password@`, `?password=`) shown as ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))


def hide_password(text: str, url: str) -> str:
    """`text` (an error message about `url`) with the URL's password, however it is quoted, as ***."""
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # not an SQLAlchemy URL: mask_url is all there is to hide
        password = None
    text = text.replace(url, mask_url(url))
    return text.replace(str(password), "***") if password else text
