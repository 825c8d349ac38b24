"""Who may use the server, and from where: bind address, CORS, and optional token authentication.

Threat model (README "Security"): the server holds patient images and the labels clinicians correct.
By default it binds the loopback address, answers no cross-origin browser request, and needs no login
(only local users of the machine reach it). A server reachable from other machines must authenticate:
it refuses to start on a non-loopback address unless ``--conf auth_users FILE`` is given.

Authentication is local and keeps MONAI Label's own client and the 3D Slicer plugin working unchanged:
``GET /auth/`` says it is enabled, ``POST /auth/token`` (form ``username``, ``password``) returns a
bearer token (HS256 JWT, signed with a secret kept in the model folder, valid ``token_minutes``), and
every other request must carry ``Authorization: Bearer TOKEN``. Users and their roles are in a JSON file
of passlib hashes made with ``python -m lib.security add-user FILE NAME --roles ...``. Roles: ``user``
(read, infer, next sample), ``annotator`` (also save labels and add cases), ``admin`` (also train).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from passlib.hash import pbkdf2_sha256

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write

ROLES = ("user", "annotator", "admin")
OPEN_PATHS = {"/auth/", "/auth/token", "/", "/docs", "/openapi.json", "/favicon.ico"}
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_host(argv: list[str]) -> str | None:
    """The address a ``monailabel start_server`` / ``uvicorn`` command line binds (MONAI Label's default
    0.0.0.0 when ``--host`` is absent), or None when this process is not such a server."""
    if "start_server" not in argv and not any(a.endswith("uvicorn") for a in argv):
        return None
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return "0.0.0.0" if "start_server" in argv else "127.0.0.1"  # uvicorn's default is loopback


def required_role(method: str, path: str) -> str:
    """The least role a request needs: training is ``admin``, writing the datastore ``annotator``."""
    if path.startswith("/train") and method in ("POST", "DELETE"):
        return "admin"
    if path.startswith("/datastore") and method in ("PUT", "POST", "DELETE"):
        return "annotator"
    return "user"


def _allows(roles: list[str], needed: str) -> bool:
    return any(ROLES.index(r) >= ROLES.index(needed) for r in roles if r in ROLES)


@dataclass
class Users:
    """The users file: ``{"users": {name: {"password": PASSLIB_HASH, "roles": [...]}}}``."""

    path: Path
    users: dict[str, dict[str, Any]]

    @staticmethod
    def load(path: Path) -> Users:
        try:
            data = json.loads(Path(path).read_text())
            users = data["users"]
            if not isinstance(users, dict) or not users:
                raise ValueError("no users")
            for name, entry in users.items():
                if not pbkdf2_sha256.identify(entry["password"]) or not set(entry["roles"]) <= set(ROLES):
                    raise ValueError(f"user {name!r} needs a pbkdf2_sha256 password hash and roles in {ROLES}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--conf auth_users {path}: not a usable users file ({exc})") from exc
        return Users(Path(path), users)

    def check(self, name: str, password: str) -> list[str] | None:
        """The user's roles when the password is right, else None."""
        entry = self.users.get(name)
        if entry is None or not pbkdf2_sha256.verify(password, entry["password"]):
            return None
        return list(entry["roles"])


class TokenIssuer:
    """Signs and checks bearer tokens with a secret kept beside the served model (tokens survive a restart)."""

    def __init__(self, secret_file: Path, minutes: float):
        if secret_file.is_file():
            self.secret = secret_file.read_text().strip()
        else:
            self.secret = secrets.token_hex(32)
            with atomic_write(secret_file) as tmp:
                tmp.write_text(self.secret)
                os.chmod(tmp, 0o600)
        self.minutes = minutes

    def issue(self, name: str, roles: list[str]) -> str:
        now = int(time.time())
        claims = {"sub": name, "roles": roles, "iat": now, "exp": now + int(self.minutes * 60)}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def check(self, token: str) -> dict[str, Any]:
        """The token's claims; :class:`jwt.InvalidTokenError` for a forged, expired or malformed token."""
        return dict(jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}))


class AuthMiddleware:
    """ASGI middleware: every HTTP request but the login routes needs a valid bearer token with the role
    its route needs; the user's name is put in ``scope["state"]["user"]`` for the routes that record it."""

    def __init__(self, app: ASGIApp, issuer: TokenIssuer, prefix: str = ""):
        self.app, self.issuer, self.prefix = app, issuer, prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"][len(self.prefix) :] if scope["path"].startswith(self.prefix) else scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return await _deny(send, 401, "authentication required: get a token with POST /auth/token")
        try:
            claims = self.issuer.check(token.strip())
        except jwt.InvalidTokenError as exc:
            return await _deny(send, 401, f"invalid or expired token ({exc}): log in again with POST /auth/token")
        needed = required_role(scope["method"], path)
        if not _allows(list(claims.get("roles", [])), needed):
            return await _deny(send, 403, f"user {claims['sub']!r} lacks the role {needed!r} this request needs")
        scope.setdefault("state", {})["user"] = claims["sub"]
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: a request whose ``Content-Length`` exceeds ``max_bytes`` is answered 413 before its
    body is read (the upload routes also count the bytes of bodies sent without a length)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                return await _deny(send, 413, f"request body of {int(length)} bytes exceeds this server's limit")
        await self.app(scope, receive, send)


async def _deny(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def restrict_cors(stack: Any, origins: tuple[str, ...]) -> bool:
    """Re-initialise the running server's CORS middleware to ``origins`` only (none: no cross-origin
    browser request is answered), credentials only for listed origins. False when none is found."""
    from starlette.middleware.cors import CORSMiddleware

    node = stack
    while node is not None:
        if isinstance(node, CORSMiddleware):
            node.__init__(  # type: ignore[misc]  # the stack is built before the app may configure it
                node.app,
                allow_origins=list(origins),
                allow_credentials=bool(origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
            )
            return True
        node = getattr(node, "app", None)
    return False


def user_of(scope_state: Any, default: str = "anonymous") -> str:
    """The authenticated user of a request (``request.state``), or ``default`` when auth is off."""
    return str(getattr(scope_state, "user", None) or default)


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.security add-user FILE NAME --roles user annotator``: add or replace a user
    (the password is read from the terminal, or from standard input when it is not one)."""
    parser = argparse.ArgumentParser(prog="python -m lib.security")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add-user", help="add or replace a user in a users file (created if missing)")
    add.add_argument("file", type=Path)
    add.add_argument("name")
    add.add_argument("--roles", nargs="+", choices=ROLES, default=["user"])
    args = parser.parse_args(argv)
    password = getpass.getpass(f"password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if len(password) < 8:
        print("error: the password needs at least 8 characters", file=sys.stderr)
        return 2
    data = json.loads(args.file.read_text()) if args.file.is_file() else {"users": {}}
    data["users"][args.name] = {"password": pbkdf2_sha256.hash(password), "roles": sorted(set(args.roles))}
    with atomic_write(args.file) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
    print(f"{args.file}: user {args.name!r} with roles {sorted(set(args.roles))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
