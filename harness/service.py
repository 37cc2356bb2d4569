"""A container of a cluster's compose project: a node, or a service a user's override file adds.

The handle finds its container by the project's labels each time it is asked
(containers are made again by restarts and rebuilds), and offers what every
container has: published ports, its log, commands run inside it, its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from docker.models.containers import Container

from pgharness.errors import ClusterError
from pgharness.wait import log_tails, poll_until

if TYPE_CHECKING:
    from pgharness.cluster import Cluster


class Service:
    """A container of a cluster's compose project: a node, or a service a user's override file adds.

    ``cluster.service("pgbouncer")`` is the handle of an added service:
    its container, its published ports, its log, commands inside it.
    """

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, cluster={self.cluster.name!r})"

    @property
    def container(self) -> Container:
        """The container (Docker SDK), looked up by its compose labels."""
        return self.cluster.service_container(self.name)

    @property
    def host(self) -> str:
        """Where the tests reach the service's published ports: 127.0.0.1 for a local engine, the engine's
        host for a remote one, or PGHARNESS_HOST (see `pgharness.engine`)."""
        return self.cluster.engine.host

    def published_port(self, container_port: int, protocol: str = "tcp") -> int:
        """The port that reaches `container_port` of the service, published on the engine's bind address
        (127.0.0.1 for a local engine)."""
        container = self.container
        bind = self.cluster.engine.bind
        if container.status in ("exited", "created", "dead"):
            raise ClusterError(
                f"{self.name!r} is stopped (status: {container.status}): start it with {self.name}.start() "
                f"or `pgharness start {self.name} --name {self.cluster.name}`"
            )
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{container_port}/{protocol}") or []
        for binding in bindings:
            if binding.get("HostIp") == bind:
                return int(binding["HostPort"])
        raise ClusterError(
            f"{self.name!r} publishes no port for {container_port}/{protocol} on {bind} "
            f"(status: {container.status}); is it running, and is the port published on {bind}?"
        )

    def logs(self, tail: int = 200) -> str:
        """The last `tail` lines of the container's log."""
        raw = self.container.logs(tail=tail, stream=False)
        assert isinstance(raw, bytes)
        return raw.decode(errors="replace")

    def exec(self, *argv: str, check: bool = True, user: str = "", env: Mapping[str, str] | None = None) -> str:
        """Run a command (an argv list, never a shell string) inside the container, with more environment
        variables `env`; return its output (stdout and stderr). With `check`, a non-zero exit raises
        `ClusterError` with the output. Bounded by the Docker client's deadline (120 s)."""
        result = self.container.exec_run(list(argv), user=user, demux=False, environment=dict(env or {}))
        assert isinstance(result.output, bytes | None)
        output = (result.output or b"").decode(errors="replace")
        if check and result.exit_code != 0:
            raise ClusterError(
                f"{' '.join(argv)!r} failed on {self.name!r} (exit {result.exit_code}): {output.strip()}"
            )
        return output

    def status(self) -> str:
        """The container's state: running, exited, paused, ... (with health when it has one)."""
        container = self.container
        health = container.attrs["State"].get("Health", {}).get("Status")
        return f"{container.status} ({health})" if health else str(container.status)

    def wait_healthy(self, *, timeout: float | None = None) -> None:
        """Wait until the container's healthcheck reports healthy (running, for one without a healthcheck)."""

        def probe() -> str:
            container = self.container
            if container.status in ("exited", "dead"):
                raise ClusterError(f"{self.name!r} exited while starting\n{log_tails((self,))}")
            return str(container.attrs["State"].get("Health", {}).get("Status", container.status))

        poll_until(
            probe,
            lambda state: state in ("healthy", "running"),
            what=f"{self.name!r} to be healthy",
            timeout=timeout,
            nodes=(self,),
        )


def container_env(container: Container) -> dict[str, str]:
    """A container's environment variables (its Config.Env), as a mapping."""
    return dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [] if "=" in item)
