"""Bearer tokens: required for writes (no token configured means no writes), optional for reads."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from starlette.requests import Request

from snapmatch.serve.errors import HTTPProblem

TOKEN_ENV = "SNAPMATCH_TOKEN"


def load_token(token_file: str | os.PathLike | None = None, *, env: str = TOKEN_ENV) -> str | None:
    """The token from a file (first line) or else the environment variable; None when neither gives one."""
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise ValueError(f"the token file {path} is empty")
        return token
    token = os.environ.get(env, "").strip()
    return token or None


class TokenCheck:
    def __init__(self, token: str | None, *, reads: bool = False) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("the token must be at least 16 characters (for example: openssl rand -hex 32)")
        self._token = token.encode() if token is not None else None
        self.reads = reads and token is not None

    @property
    def writes_enabled(self) -> bool:
        return self._token is not None

    def write(self, request: Request) -> None:
        if self._token is None:
            raise HTTPProblem(403, "WritesDisabled", "this server takes no writes: start it with --token-file "
                              f"(or {TOKEN_ENV}) to enable them")
        self._check(request)

    def read(self, request: Request) -> None:
        if self.reads:
            self._check(request)

    def _check(self, request: Request) -> None:
        assert self._token is not None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPProblem(401, "Unauthorized", "this needs an Authorization: Bearer <token> header",
                              {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise HTTPProblem(403, "Forbidden", "the bearer token is not the server's")
