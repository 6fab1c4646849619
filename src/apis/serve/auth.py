"""Annotator tokens: who may answer, under which name.

A token is a secret string; its name is what the store records as the annotator of each answer. Tokens come
from ``--token NAME=TOKEN`` options, a tokens file (one ``NAME=TOKEN`` per line, ``#`` comments), or, when
neither is given, one random token for the name ``annotator``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

DEFAULT_NAME = "annotator"
MIN_TOKEN_LENGTH = 12
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class TokenError(ValueError):
    """A token option or file that cannot be used; the message names it and the fix."""


class Annotators:
    """Token → annotator name, compared in constant time."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise TokenError("no annotator tokens; give --token NAME=TOKEN or a tokens file")
        self._tokens = dict(tokens)

    @classmethod
    def random(cls, name: str = DEFAULT_NAME) -> Annotators:
        """One fresh random token (``secrets.token_urlsafe``) for ``name``."""
        return cls({secrets.token_urlsafe(24): name})

    def name(self, token: str | None) -> str | None:
        """The annotator whose token this is, or None."""
        if not token:
            return None
        found = None
        for known, name in self._tokens.items():
            if secrets.compare_digest(known.encode(), token.encode()):
                found = name
        return found

    def items(self) -> list[tuple[str, str]]:
        """(name, token) pairs, by name."""
        return sorted(((n, t) for t, n in self._tokens.items()), key=lambda p: p[0])


def parse_tokens(pairs: Iterable[str], where: str = "--token") -> dict[str, str]:
    """``NAME=TOKEN`` strings → {token: name}. Names: letters, digits and ``_.@-``; tokens: at least
    :data:`MIN_TOKEN_LENGTH` characters, each used once."""
    tokens: dict[str, str] = {}
    for pair in pairs:
        name, sep, token = pair.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not _NAME.fullmatch(name):
            raise TokenError(f"{where} {pair!r}: write NAME=TOKEN, NAME of letters, digits and _.@- (1-64 chars)")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise TokenError(f"{where} {name}=…: the token must be at least {MIN_TOKEN_LENGTH} characters without "
                             "spaces; make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        if token in tokens:
            raise TokenError(f"{where} {name}=…: the same token is given to {tokens[token]}; "
                             "give each person their own")
        tokens[token] = name
    return tokens


def read_tokens_file(path: Path) -> dict[str, str]:
    """A tokens file: one ``NAME=TOKEN`` per line; blank lines and lines starting with ``#`` are ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise TokenError(f"{path}: cannot read the tokens file ({err})") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            for token, name in parse_tokens([line], where=f"{path}:{number}:").items():
                if token in tokens:
                    raise TokenError(f"{path}:{number}: the same token is given to {tokens[token]} and {name}")
                tokens[token] = name
    return tokens


def load_annotators(pairs: Iterable[str] = (), tokens_file: Path | None = None) -> Annotators:
    """Annotators from ``--token`` pairs and/or a tokens file; a random token when neither gives any."""
    tokens = parse_tokens(pairs)
    if tokens_file is not None:
        for token, name in read_tokens_file(tokens_file).items():
            if token in tokens:
                raise TokenError(f"{tokens_file}: the token of {name} is also given by --token to {tokens[token]}")
            tokens[token] = name
    return Annotators(tokens) if tokens else Annotators.random()
