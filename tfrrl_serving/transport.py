"""How the two servers listen and their clients connect (gRPC transport): the port range, a
port already taken, TLS (server certificate and key, optionally mutual TLS with a client CA) and
the channel a client opens.

* A port must be in 0-65535 (0 = any free one): gRPC itself wraps an out-of-range port silently
  (99999 would listen on 34463), so :func:`check_port` refuses it first.
* Loopback only by default (``127.0.0.1``); binding another interface without TLS is logged
  as a warning.
* TLS: :class:`ServerTLS` (``--tls-cert``, ``--tls-key``; ``--tls-client-ca`` makes it mutual:
  a client must present a certificate signed by that CA) and :class:`ClientTLS` (``--tls-ca``
  to trust the server, ``--tls-cert`` / ``--tls-key`` to present one).

Light at import (gRPC only).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
import logging
import socket
from typing import Any, Optional, Sequence, Tuple

import grpc

from tfrrl_serving.errors import PortError, PortInUseError, TLSConfigError

logger = logging.getLogger(__name__)

MAX_PORT = 65535


def check_port(port: Any, flag: str = "--port") -> int:
    """``port`` as an int in 0-65535; :class:`PortError` otherwise."""
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise PortError(f"{flag} {port!r} is not a port number: give 0-{MAX_PORT} "
                        "(0 = any free port)") from None
    if not 0 <= value <= MAX_PORT:
        raise PortError(f"{flag} {port} is out of range: give 0-{MAX_PORT} (0 = any free port)")
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise TLSConfigError(f"cannot read the {what} {path} ({err.strerror})") from None


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain and private key (PEM files); with ``client_ca_file``,
    mutual TLS: clients must present a certificate signed by that CA."""

    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None

    def credentials(self) -> grpc.ServerCredentials:
        cert = _read(self.cert_file, "server certificate")
        key = _read(self.key_file, "server key")
        client_ca = _read(self.client_ca_file, "client CA certificate")
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)


@dataclasses.dataclass(frozen=True)
class ClientTLS:
    """What a client trusts (``ca_file``; None = the system roots) and, for mutual TLS, the
    certificate and key it presents."""

    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None

    def __post_init__(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise TLSConfigError("a client certificate needs its key and the other way round: "
                                 "give both --tls-cert and --tls-key")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA certificate"),
            private_key=_read(self.key_file, "client key"),
            certificate_chain=_read(self.cert_file, "client certificate"))


def check_port_free(host: str, port: int) -> None:
    """:class:`PortInUseError` when ``host:port`` is taken (checked with a plain socket before
    gRPC binds, so the error is one line instead of gRPC's native log and a RuntimeError)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gRPC binds: a port in TIME_WAIT (a server just stopped) is free, a listener not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PortInUseError(f"{host}:{port} is in use by another process: stop it, or "
                                     "pick another --port (0 = any free port)") from None
            if err.errno in (errno.EACCES, errno.EPERM):
                raise PortInUseError(f"no permission to listen on {host}:{port} (ports below "
                                     "1024 need privileges): pick another --port") from None
            raise


def bind(server: grpc.Server, host: str, port: Any, tls: Optional[ServerTLS] = None) -> int:
    """Adds ``host:port`` to ``server`` (TLS when given); returns the bound port."""
    port = check_port(port)
    check_port_free(host, port)
    address = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, tls.credentials()) if tls is not None
                 else server.add_insecure_port(address))
    except RuntimeError:
        bound = 0
    if not bound:
        raise PortInUseError(f"cannot listen on {address}: pick another --port (0 = any free "
                             "port) or --host")
    if tls is None and not is_loopback(host):
        logger.warning("listening on %s without TLS: anyone who reaches it can call it "
                       "(give --tls-cert / --tls-key)", address)
    return bound


def open_channel(target: str, tls: Optional[ClientTLS] = None,
                 options: Sequence[Tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to ``target``: TLS when ``tls`` is given, plaintext otherwise."""
    if tls is not None:
        return grpc.secure_channel(target, tls.credentials(), list(options))
    return grpc.insecure_channel(target, list(options))


# --------------------------------------------------------------------------------------------
# flags (``sep``: "-" for the tfrrl commands, "_" for tensorflow_model_server-style ones)
# --------------------------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser, sep: str = "-") -> None:
    """``--no-reflection`` and the server TLS flags."""
    parser.add_argument(f"--no{sep}reflection", dest="no_reflection", action="store_true",
                        help="do not register gRPC server reflection")
    parser.add_argument(f"--tls{sep}cert", dest="tls_cert", metavar="PEM",
                        help="serve TLS with this certificate chain (with the key flag)")
    parser.add_argument(f"--tls{sep}key", dest="tls_key", metavar="PEM",
                        help="the private key of the TLS certificate")
    parser.add_argument(f"--tls{sep}client{sep}ca", dest="tls_client_ca", metavar="PEM",
                        help="mutual TLS: require client certificates signed by this CA")


def server_tls_from_args(args: argparse.Namespace, sep: str = "-") -> Optional[ServerTLS]:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise TLSConfigError(f"--tls{sep}client{sep}ca needs --tls{sep}cert and "
                                 f"--tls{sep}key (mutual TLS is TLS first)")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise TLSConfigError(f"TLS needs both --tls{sep}cert and --tls{sep}key")
    return ServerTLS(args.tls_cert, args.tls_key, args.tls_client_ca)


def add_client_arguments(parser: argparse.ArgumentParser, prefix: str = "--tls-",
                         what: str = "the server") -> None:
    """The client TLS flags ``{prefix}ca``, ``{prefix}cert``, ``{prefix}key``."""
    dest = prefix.strip("-").replace("-", "_")
    parser.add_argument(f"{prefix}ca", dest=f"{dest}ca", metavar="PEM",
                        help=f"connect to {what} over TLS, trusting this CA certificate")
    parser.add_argument(f"{prefix}cert", dest=f"{dest}cert", metavar="PEM",
                        help=f"mutual TLS: the client certificate to present to {what}")
    parser.add_argument(f"{prefix}key", dest=f"{dest}key", metavar="PEM",
                        help="mutual TLS: the client certificate's key")


def client_tls_from_args(args: argparse.Namespace, prefix: str = "--tls-"
                         ) -> Optional[ClientTLS]:
    dest = prefix.strip("-").replace("-", "_")
    ca, cert, key = (getattr(args, f"{dest}{n}") for n in ("ca", "cert", "key"))
    if ca is None and cert is None and key is None:
        return None
    return ClientTLS(ca, cert, key)
