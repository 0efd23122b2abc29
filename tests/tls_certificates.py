"""Throw-away TLS certificates for the serving tests, made with the ``cryptography`` package: a
CA, a server certificate for 127.0.0.1 / localhost, a client certificate signed by the CA, and a
client certificate of another CA (which a mutual-TLS server must refuse). EC P-256 keys, valid
for one day."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from typing import Dict, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: Optional[Tuple[x509.Certificate, object]], *,
                 ca: bool, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signer = issuer[1] if issuer else key
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(folder: pathlib.Path, name: str, cert: x509.Certificate, key) -> Tuple[str, str]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def make_certificates(folder: pathlib.Path) -> Dict[str, str]:
    """PEM files in ``folder``: ``ca``, ``server_cert`` / ``server_key``, ``client_cert`` /
    ``client_key`` (signed by ``ca``), ``rogue_ca`` and its ``rogue_cert`` / ``rogue_key``."""
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in
            ("ca", "server", "client", "rogue_ca", "rogue")}
    ca = _certificate("tfrrl test CA", keys["ca"], None, ca=True)
    rogue_ca = _certificate("another CA", keys["rogue_ca"], None, ca=True)
    out = {"ca": _write(folder, "ca", ca, keys["ca"])[0],
           "rogue_ca": _write(folder, "rogue_ca", rogue_ca, keys["rogue_ca"])[0]}
    out["server_cert"], out["server_key"] = _write(
        folder, "server", _certificate("127.0.0.1", keys["server"], (ca, keys["ca"]), ca=False,
                                       server=True), keys["server"])
    out["client_cert"], out["client_key"] = _write(
        folder, "client", _certificate("client", keys["client"], (ca, keys["ca"]), ca=False),
        keys["client"])
    out["rogue_cert"], out["rogue_key"] = _write(
        folder, "rogue", _certificate("rogue", keys["rogue"], (rogue_ca, keys["rogue_ca"]),
                                      ca=False), keys["rogue"])
    return out
