"""CURVE security (authentication + encryption) for posestream's tcp endpoints.

    posestream keys keys/ --name engine           # keys/engine.key (public) + keys/engine.key_secret
    posestream keys keys/ --name cam1             # one pair per client (capture, renderer, subscriber)
    mkdir allowed && cp keys/cam1.key allowed/    # the engine accepts the clients whose public keys are here
    posestream serve --frames tcp://0.0.0.0:5555 --curve-secret keys/engine.key_secret --curve-clients allowed
    posestream capture --engine tcp://HOST:5555 --curve-server keys/engine.key --curve-secret keys/cam1.key_secret

The engine binds every tcp socket (frames, pose stream, delivery) as a CURVE server and runs pyzmq's ZAP
authenticator (``zmq.auth``) in its process: a client without a key from the allowed folder fails the
handshake and can neither send frames nor read poses or deliveries. ipc:// endpoints stay plain (a private
folder's file permissions guard them). A tcp bind beyond loopback without CURVE is allowed but warned about.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zmq

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class CurveKeys:
    """One side's keys. ``secret``: its own key pair file (``NAME.key_secret``). A server also names
    ``clients``, the folder of allowed clients' public key files; a client names ``server``, the server's
    public key file (``NAME.key``)."""

    secret: str
    server: str | None = None
    clients: str | None = None


def secured(endpoint: str) -> bool:
    """Whether CURVE applies to ``endpoint`` (tcp; not ipc:// or inproc://)."""
    return endpoint.startswith("tcp://")


def _load(path: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"CURVE key {path}: {err}") from None
    if need_secret and secret is None:
        raise ValueError(f"CURVE key {path}: no secret key in it (use the NAME.key_secret file)")
    return public, secret


def secure_server(sock: zmq.Socket, keys: CurveKeys | None, endpoint: str) -> None:
    """Make ``sock`` a CURVE server for a tcp ``endpoint`` (before it binds); warn about a bind beyond loopback
    without CURVE."""
    if not secured(endpoint):
        return
    if keys is None:
        host = endpoint[len("tcp://"):].rpartition(":")[0]
        if host not in LOOPBACK:
            log.warning("%s: bound beyond loopback without CURVE: anyone who reaches it can send frames and read "
                        "poses (make keys with `posestream keys`, then --curve-secret / --curve-clients)", endpoint)
        return
    public, secret = _load(keys.secret, need_secret=True)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def secure_client(sock: zmq.Socket, keys: CurveKeys | None, endpoint: str) -> None:
    """Make ``sock`` a CURVE client of the server whose public key ``keys.server`` names (before it connects)."""
    if keys is None or not secured(endpoint):
        return
    if keys.server is None:
        raise ValueError("CURVE client keys need the server's public key file (--curve-server)")
    public, secret = _load(keys.secret, need_secret=True)
    server, _ = _load(keys.server, need_secret=False)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server


def start_authenticator(ctx: zmq.Context, keys: CurveKeys | None):
    """The ZAP authenticator admitting the clients whose public keys are in ``keys.clients`` (None without
    keys); stop it with ``.stop()`` after closing the sockets."""
    if keys is None:
        return None
    if not keys.clients or not Path(keys.clients).is_dir():
        raise ValueError(f"CURVE: the allowed clients' folder {keys.clients!r} does not exist (--curve-clients)")
    if not any(p.suffix == ".key" for p in Path(keys.clients).iterdir()):
        log.warning("CURVE: %s holds no public key (NAME.key): no client will be admitted", keys.clients)
    _load(keys.secret, need_secret=True)
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("posestream.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.clients))
    return auth


def make_keys(directory: str, name: str) -> tuple[str, str]:
    """Write ``directory/name.key`` (public) and ``name.key_secret`` (readable by this user only)."""
    import zmq.auth

    os.makedirs(directory, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return public, secret


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve-server", metavar="FILE", help="CURVE: the engine's public key (NAME.key from "
                        "`posestream keys`); tcp traffic is then authenticated and encrypted")
    parser.add_argument("--curve-secret", metavar="FILE", help="CURVE: this client's key pair (NAME.key_secret)")


def client_keys(parser: argparse.ArgumentParser, args) -> CurveKeys | None:
    if bool(args.curve_server) != bool(args.curve_secret):
        parser.error("--curve-server and --curve-secret go together")
    return CurveKeys(args.curve_secret, server=args.curve_server) if args.curve_secret else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posestream keys", description="Make a CURVE key pair for posestream's "
                                     "tcp endpoints: DIR/NAME.key (public: give it to the other side) and "
                                     "DIR/NAME.key_secret (keep it). The engine admits the clients whose NAME.key "
                                     "files are in its --curve-clients folder.")
    parser.add_argument("directory", help="where to write the pair")
    parser.add_argument("--name", default="posestream", help="file name stem (default posestream)")
    args = parser.parse_args(argv)
    target = Path(args.directory) / f"{args.name}.key_secret"
    if target.exists():
        print(f"posestream keys: {target} exists; not overwriting it", file=sys.stderr)
        return 2
    public, secret = make_keys(args.directory, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0
