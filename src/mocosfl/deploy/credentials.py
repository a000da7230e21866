"""Throwaway TLS certificates and SuperNode keys for a deployment (for trials, not production).

``python -m mocosfl.deploy.credentials DIR --nodes N [--host NAME_OR_IP ...]`` writes into DIR:
``ca.crt`` (the root every SuperNode and the ``flwr`` CLI trust), ``server.pem`` and
``server.key`` (the SuperLink's, valid for each ``--host``), and ``node<k>`` / ``node<k>.pub``
(SuperNode k's OpenSSH key pair; register each ``.pub`` with ``flwr supernode register``).
A real federation takes its certificates from its organisation's CA.
"""

import argparse
import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_FOR = datetime.timedelta(days=30)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _certificate(subject: str, issuer: x509.Name, key, signer, extensions) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID_FOR)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def write_credentials(
    folder: Path, nodes: int, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> None:
    """The files of the module docstring, for a SuperLink reached as any of ``hosts``."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP384R1()),
    )
    ca = _certificate(
        "mocosfl trial CA",
        _name("mocosfl trial CA"),
        ca_key,
        ca_key,
        [(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    server = _certificate(
        hosts[0],
        ca.subject,
        server_key,
        ca_key,
        [(x509.SubjectAlternativeName([_alternative_name(h) for h in hosts]), False)],
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    private = serialization.NoEncryption()
    (folder / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, private)
    )
    for k in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        (folder / f"node{k}").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, private)
        )
        (folder / f"node{k}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
        )
    for path in folder.iterdir():
        if not path.name.endswith((".crt", ".pem", ".pub")):
            path.chmod(0o600)  # private keys: owner only


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mocosfl.deploy.credentials", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--nodes", type=int, required=True, help="SuperNode key pairs to make")
    parser.add_argument(
        "--host",
        action="append",
        help="a name or IP the SuperLink is reached as (repeatable; "
        "default 127.0.0.1 and localhost)",
    )
    args = parser.parse_args(argv)
    write_credentials(args.folder, args.nodes, args.host or ("127.0.0.1", "localhost"))
    print(
        f"wrote a CA, the SuperLink's certificate and {args.nodes} SuperNode keys to {args.folder}"
    )


if __name__ == "__main__":
    main()
