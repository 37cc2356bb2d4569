"""TLS for replication: a certificate authority made at run time (trustme) and a server certificate::

    cluster = Cluster(image=..., tls=True)          # a fresh CA, one server certificate
    cluster.add_node("rogue", env=TlsFiles.make().variables())   # a node that trusts another CA

The PEM texts reach the nodes as PGHARNESS_TLS_CA / _CERT / _KEY; the entrypoint
writes them outside PGDATA at every start, turns on ``ssl``, requires TLS for
replication connections (``hostssl`` in pg_hba.conf) and makes standbys connect
with ``sslmode=verify-full``, checking the upstream's host name against the
certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Host names a node is reached by on the replication network: compose's services and run-time nodes' usual names.
NODE_NAMES = (
    "primary",
    "standby",
    "archive-standby",
    "slot-standby",
    *(f"standby{i}" for i in range(2, 10)),
    "cascade",
    "localhost",
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM texts: the CA's certificate, and one server certificate and key valid for every node name."""

    ca: str
    cert: str
    key: str

    @classmethod
    def make(cls, names: tuple[str, ...] = NODE_NAMES) -> TlsFiles:
        """A new CA and a server certificate it signs for `names`."""
        import trustme  # here: every CLI call imports this module, few make a CA (cryptography is slow to import)

        authority = trustme.CA(organization_name="pgharness test CA")
        server = authority.issue_cert(*names)
        return cls(
            ca=authority.cert_pem.bytes().decode(),
            cert="".join(blob.bytes().decode() for blob in server.cert_chain_pems),
            key=server.private_key_pem.bytes().decode(),
        )

    def variables(self) -> dict[str, str]:
        """The compose variables that hand these files to the nodes."""
        return {"PGHARNESS_TLS_CA": self.ca, "PGHARNESS_TLS_CERT": self.cert, "PGHARNESS_TLS_KEY": self.key}
