"""Who may use the server (lib.security): bind address, roles, origins and tokens, without a server."""

import time

import jwt
import pytest

from lib.configs.server import ServerConfig
from lib.security import TokenIssuer, Users, bound_host, is_loopback, required_role
from mudo_app.errors import InputError


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_the_bound_host_is_read_from_the_server_command_line():
    assert bound_host(["monailabel.main", "start_server", "--app", "a"]) == "0.0.0.0"  # MONAI Label's default
    assert bound_host(["monailabel.main", "start_server", "--host", "127.0.0.1"]) == "127.0.0.1"
    assert bound_host(["x/uvicorn", "monailabel.app:app", "--host=10.0.0.2"]) == "10.0.0.2"
    assert bound_host(["-m", "monailabel.interfaces.utils.app", "-m", "train"]) is None  # a training subprocess


def test_roles_needed_per_route():
    assert required_role("POST", "/train/muduo") == "admin" and required_role("DELETE", "/train/") == "admin"
    assert required_role("PUT", "/datastore/label") == "annotator"
    assert required_role("POST", "/infer/muduo_student") == "user" and required_role("GET", "/train/") == "user"


def test_allowed_origins_are_origins_and_never_a_wildcard(tmp_path):
    conf = ServerConfig.from_conf(str(tmp_path), {"allowed_origins": "http://ohif:3000, https://viewer.org/"})
    assert conf.allowed_origins == ("http://ohif:3000", "https://viewer.org")
    for bad in ("*", "ohif:3000", "http://a/b"):
        with pytest.raises(InputError, match="allowed_origins"):
            ServerConfig.from_conf(str(tmp_path), {"allowed_origins": bad})


def test_tokens_are_signed_expire_and_survive_a_restart(tmp_path):
    issuer = TokenIssuer(tmp_path / ".auth_secret", minutes=1)
    token = issuer.issue("alice", ["annotator"])
    assert TokenIssuer(tmp_path / ".auth_secret", minutes=1).check(token)["sub"] == "alice"  # same secret
    assert (tmp_path / ".auth_secret").stat().st_mode & 0o077 == 0
    forged = jwt.encode({"sub": "mallory", "roles": ["admin"], "exp": time.time() + 60}, "guess", algorithm="HS256")
    with pytest.raises(jwt.InvalidTokenError):
        issuer.check(forged)
    expired = jwt.encode({"sub": "alice", "exp": time.time() - 1}, issuer.secret, algorithm="HS256")
    with pytest.raises(jwt.ExpiredSignatureError):
        issuer.check(expired)


def test_a_users_file_with_plain_passwords_is_refused(tmp_path):
    path = tmp_path / "users.json"
    path.write_text('{"users": {"bob": {"password": "hunter2", "roles": ["admin"]}}}')
    with pytest.raises(InputError, match="pbkdf2_sha256 password hash"):
        Users.load(path)
