"""The node image: built offline from Debian packages, or on top of an image the user brings.

Two steps, each cached on its inputs (a label on the image holds their digest;
an image whose label matches is not built again):

1. the base: a Debian rootfs with ``postgresql-N`` made by ``mmdebstrap`` and
   ``docker import``-ed (about a minute; no registry needed). Skipped when the
   user brings a base image (``PG_IMAGE=postgres:17``).
2. the node image: ``docker/Dockerfile`` on top of the base (entrypoint,
   healthcheck, template cluster), tagged ``pgharness/postgres:<version>``.

Images are named by their inputs: each is tagged ``<alias>-<digest>`` (`content_tag`), and the plain tag
(``pgharness/postgres:17``, what ``docker compose up`` alone uses) is an alias moved to the image last
ensured. Clusters run the digest tag, so two checkouts of the harness whose ``docker/`` differ keep one
image each on a shared engine: alternating them builds nothing, and neither replaces the image under
the other's running clusters. `collectable_images` says which ones ``pgharness gc`` removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
import docker.errors
from filelock import FileLock

from pgharness.compose import COMPOSE_FILE, docker_client, run_container
from pgharness.constants import MANAGED_LABEL
from pgharness.engine import resolve
from pgharness.errors import ImageError
from pgharness.versions import DEFAULT_VERSION, DebianSuite, suite_for

log = logging.getLogger("pgharness")

DOCKER_DIR = COMPOSE_FILE.parent / "docker"
INPUTS_LABEL = "org.pgharness.inputs"
#: Deadline of one image build step (mmdebstrap | docker import, docker build), in seconds.
BUILD_TIMEOUT = 1800.0
#: Bump when the base recipe below changes in a way its digest does not see.
RECIPE_VERSION = "1"


@dataclass(frozen=True)
class ImageSpec:
    """Which node image to use: a PostgreSQL version built from Debian, or a user's base image."""

    pg_version: int
    base_image: str | None = None  #: the user's image (PG_IMAGE); None for the Debian build

    @property
    def tag(self) -> str:
        if self.base_image:
            return f"pgharness/postgres:from-{sanitize_tag(self.base_image)}"
        return f"pgharness/postgres:{self.pg_version}"

    @property
    def base_tag(self) -> str:
        if self.base_image:
            return self.base_image
        return f"pgharness/base:{self.pg_version}-{suite_for(self.pg_version).name}"


def sanitize_tag(image: str) -> str:
    """A Docker tag made from an image reference (``postgres:17-alpine`` -> ``postgres-17-alpine``)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", image).strip("-.")
    return tag[:120] or "image"


def mmdebstrap_command(
    suite: DebianSuite, mirror: str | None = None, packages: tuple[str, ...] | None = None
) -> list[str]:
    """The mmdebstrap call that writes a rootfs tarball with PostgreSQL (or `packages`) to stdout."""
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--include=" + ",".join(packages or suite.packages),
        # No "main" cluster from postgresql-common: the image makes its own template.
        '--essential-hook=mkdir -p "$1/etc/postgresql-common/createcluster.d" && '
        "echo 'create_main_cluster = false' > \"$1/etc/postgresql-common/createcluster.d/pgharness.conf\"",
        # The postgres user and group with ids of their own (the official images' 999), made before the
        # server package would pick the next free ones: a data folder of one major's image is then owned
        # by the postgres of every other, as pg_upgrade needs (it runs both servers on one data volume).
        "--essential-hook=echo 'postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash'"
        ' >> "$1/etc/passwd" && echo postgres:x:999: >> "$1/etc/group" && echo "postgres:*:1::::::"'
        ' >> "$1/etc/shadow" && echo "postgres:!::" >> "$1/etc/gshadow"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    cmd += [f"--aptopt={opt}" for opt in suite.apt_options]
    cmd += [suite.name, "-"]
    if mirror:
        cmd.append(mirror)
    return cmd


#: mmdebstrap's modes the harness chooses from, in its order of preference (see `mmdebstrap_mode`).
MMDEBSTRAP_MODES = ("root", "unshare", "sudo", "fakechroot")


@dataclass(frozen=True)
class BuildHost:
    """What this machine allows mmdebstrap, as `mmdebstrap_mode` asks it (each a probe, to test without root)."""

    is_root: Callable[[], bool]
    #: User namespaces work for this user: subordinate ids in /etc/subuid, newuidmap, and `unshare --user`
    #: allowed (Ubuntu 24.04 restricts it through AppArmor: "unshare: Operation not permitted").
    can_unshare: Callable[[], bool]
    #: Passwordless sudo (`sudo -n true`), as on GitHub's hosted runners.
    can_sudo: Callable[[], bool]
    has_fakechroot: Callable[[], bool]


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _has_subids(path: str = "/etc/subuid") -> bool:
    names = {str(os.getuid()), pwd.getpwuid(os.getuid()).pw_name}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return False
    return any(line.split(":", 1)[0] in names for line in lines if ":" in line)


THIS_HOST = BuildHost(
    is_root=lambda: os.geteuid() == 0,
    can_unshare=lambda: (
        _has_subids()
        and shutil.which("newuidmap") is not None
        and _succeeds(["unshare", "--user", "--map-root-user", "true"])
    ),
    can_sudo=lambda: _succeeds(["sudo", "--non-interactive", "true"]),
    has_fakechroot=lambda: shutil.which("fakechroot") is not None and shutil.which("fakeroot") is not None,
)


def mmdebstrap_mode(environ: Mapping[str, str] | None = None, host: BuildHost = THIS_HOST) -> str:
    """The mmdebstrap ``--mode`` for this machine: PGHARNESS_MMDEBSTRAP_MODE when set; else ``root``
    as root, ``unshare`` where user namespaces work, ``sudo`` with passwordless sudo, ``fakechroot``
    where it is installed. Raises `ImageError` in one line naming the remedies when none works."""
    environ = os.environ if environ is None else environ
    forced = environ.get("PGHARNESS_MMDEBSTRAP_MODE", "").strip()
    if forced:
        if forced not in (*MMDEBSTRAP_MODES, "auto", "fakeroot", "chrootless"):
            raise ImageError(
                f"PGHARNESS_MMDEBSTRAP_MODE={forced!r} is not an mmdebstrap mode: "
                f"one of {', '.join(MMDEBSTRAP_MODES)} (or auto, fakeroot, chrootless)"
            )
        return forced
    if host.is_root():
        return "root"
    if host.can_unshare():
        return "unshare"
    if host.can_sudo():
        return "sudo"
    if host.has_fakechroot():
        return "fakechroot"
    raise ImageError(
        "mmdebstrap cannot build the image as this user: user namespaces are unavailable (no subordinate ids "
        "in /etc/subuid, or unshare is not permitted), sudo asks for a password and fakechroot is not installed; "
        "build as root, allow user namespaces, set up passwordless sudo, install fakechroot and fakeroot, "
        "set PGHARNESS_MMDEBSTRAP_MODE, or bring an image (PG_IMAGE=postgres:17)"
    )


#: Digest-tagged images of one family that `collectable_images` keeps besides the alias's and those in use.
KEEP_IMAGES = 2


def content_tag(alias: str, inputs: str) -> str:
    """The tag of the image of `alias`'s family made of `inputs` (a digest): ``pgharness/postgres:17-<12 hex>``."""
    repository, _, tag = alias.rpartition(":")
    return f"{repository}:{tag[:110]}-{inputs[:12]}"


def family_of(tag: str) -> str | None:
    """The alias of a digest tag (``pgharness/postgres:17-0123456789ab`` -> ``pgharness/postgres:17``), or
    None for a tag that is no digest tag."""
    m = re.fullmatch(r"(.+:.+)-[0-9a-f]{12}", tag)
    return m.group(1) if m else None


@dataclass(frozen=True)
class ImageRecord:
    """One image as `collectable_images` weighs it: its id, tags and creation time (ISO text sorts)."""

    id: str
    tags: tuple[str, ...]
    created: str


def collectable_images(images: list[ImageRecord], in_use: set[str]) -> list[ImageRecord]:
    """The digest-tagged harness images ``pgharness gc`` removes: in each family (the tags of one alias),
    every image but the one the alias names, those a container uses (`in_use`: image ids, running or
    not), and the `KEEP_IMAGES` newest. So two checkouts alternating on one engine keep theirs."""
    families: dict[str, list[ImageRecord]] = {}
    for image in images:
        for family in {family_of(tag) for tag in image.tags} - {None}:
            assert family is not None
            families.setdefault(family, []).append(image)
    doomed: dict[str, ImageRecord] = {}
    for family, members in families.items():
        newest = sorted(members, key=lambda i: i.created, reverse=True)[:KEEP_IMAGES]
        for image in members:
            if image in newest or image.id in in_use or family in image.tags:
                continue
            doomed[image.id] = image
    return sorted(doomed.values(), key=lambda i: i.created)


def collect_images(client: docker.DockerClient) -> list[str]:
    """Remove the harness's images that `collectable_images` names; return their digest tags."""
    images = [
        ImageRecord(str(i.id), tuple(t for t in i.tags if t.startswith("pgharness/")), str(i.attrs.get("Created")))
        for i in client.images.list()
        if any(t.startswith("pgharness/") for t in i.tags)
    ]
    in_use = {str(c.attrs.get("ImageID")) for c in client.containers.list(all=True, sparse=True)}
    removed = []
    for image in collectable_images(images, in_use):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError as e:  # a container made since, say: kept, and said why
            log.warning("kept image %s: %s", ", ".join(image.tags), e.explanation or e)
            continue
        removed += [t for t in image.tags if family_of(t)]
    return removed


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_inputs(suite: DebianSuite, mirror: str | None, packages: tuple[str, ...] | None = None) -> str:
    return digest(RECIPE_VERSION, *mmdebstrap_command(suite, mirror, packages))


#: The upgrade image's recipe (`upgrade_image`): in docker/, not part of the node image.
UPGRADE_DOCKERFILE = DOCKER_DIR / "upgrade.Dockerfile"


def node_inputs(base_id: str) -> str:
    """Digest of what the node image is made of: its base and the files of docker/ (but the upgrade
    image's recipe)."""
    files = sorted(p for p in DOCKER_DIR.rglob("*") if p.is_file() and p != UPGRADE_DOCKERFILE)
    return digest(base_id, *(f"{p.relative_to(DOCKER_DIR)}" for p in files), *(p.read_bytes() for p in files))


class ImageBuilder:
    """Builds (or finds, when its inputs are unchanged) the node image of an `ImageSpec`."""

    def __init__(self, spec: ImageSpec, *, mirror: str | None = None, out: IO[str] = sys.stderr) -> None:
        self.spec = spec
        self.mirror = mirror
        self.out = out
        self.client = docker_client()

    def say(self, message: str) -> None:
        print(f"### {message}", file=self.out, flush=True)

    def label_of(self, tag: str) -> str | None:
        try:
            image = self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        return str((image.labels or {}).get(INPUTS_LABEL, ""))

    def adopt(self, alias: str, inputs: str) -> str | None:
        """The digest tag of `alias`'s image made of `inputs` when the engine has it (an image an older
        harness tagged only `alias` gets its digest tag now), the alias moved to it; else None."""
        tag = content_tag(alias, inputs)
        if self.label_of(tag) != inputs:
            if self.label_of(alias) != inputs:
                return None
            self._tag(alias, tag)
        try:
            if self.client.images.get(alias).id != self.client.images.get(tag).id:
                self._tag(tag, alias)
        except docker.errors.ImageNotFound:
            self._tag(tag, alias)
        return tag

    def _tag(self, image: str, tag: str) -> None:
        repository, _, version = tag.rpartition(":")
        self.client.images.get(image).tag(repository, version)

    def ensure(self) -> str:
        """Return the node image's digest tag, building it when missing (and moving the alias to it)."""
        base_id = self.ensure_base()
        inputs = node_inputs(base_id)
        found = self.adopt(self.spec.tag, inputs)
        if found:
            return found
        tag = content_tag(self.spec.tag, inputs)
        self.say(f"building {tag} on {self.spec.base_tag}")
        cmd = [
            "docker", "build", "--progress=plain",
            "--build-arg", f"BASE_IMAGE={self.spec.base_tag}",
            "--label", f"{INPUTS_LABEL}={inputs}",
            "--tag", tag,
            "--tag", self.spec.tag,
            str(DOCKER_DIR),
        ]  # fmt: skip
        self.run(cmd, what=f"docker build of {tag}")
        return tag

    def ensure_base(self) -> str:
        """The base image's id; built with mmdebstrap (Debian) or pulled (a user's image) if missing."""
        if self.spec.base_image:
            return self.user_base()
        suite = suite_for(self.spec.pg_version)
        inputs = base_inputs(suite, self.mirror)
        tag = self.adopt(self.spec.base_tag, inputs)
        if tag is None:
            tag = content_tag(self.spec.base_tag, inputs)
            self.build_base(suite, tag, inputs, alias=self.spec.base_tag)
        return str(self.client.images.get(tag).id)

    def user_base(self) -> str:
        image = self.spec.base_image
        assert image is not None
        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            pass
        self.say(f"pulling {image}")
        try:
            return str(self.client.images.pull(image).id)
        except docker.errors.APIError as e:
            raise ImageError(
                f"image {image!r} is not on this engine and cannot be pulled ({e.explanation or e}): "
                "pull or build it first, or give no --pg-image (and no PG_IMAGE) to build from Debian packages"
            ) from None

    def build_base(
        self,
        suite: DebianSuite,
        tag: str,
        inputs: str,
        packages: tuple[str, ...] | None = None,
        *,
        alias: str | None = None,
    ) -> None:
        packages = packages or suite.packages
        self.say(f"building {tag} from Debian {suite.name} packages ({', '.join(packages)}); about a minute")
        # The mode is how this machine builds, not what is built: it stays out of the inputs' digest.
        debootstrap = mmdebstrap_command(suite, self.mirror, packages)
        debootstrap.insert(1, f"--mode={mmdebstrap_mode()}")
        # Imported untagged, and tagged only once both sides succeeded: an interrupted build (Ctrl-C, a
        # killed mmdebstrap) must never leave a truncated rootfs under the tag, where the digest label
        # would pass it for a good one.
        importer = ["docker", "import", "--change", f"LABEL {INPUTS_LABEL}={inputs}", "-"]
        try:
            producer = subprocess.Popen(debootstrap, stdout=subprocess.PIPE)
        except FileNotFoundError:
            raise ImageError(
                "mmdebstrap is not installed: install it (Debian: apt-get install mmdebstrap) "
                "or bring an image with PostgreSQL, e.g. PG_IMAGE=postgres:17"
            ) from None
        assert producer.stdout is not None
        try:
            consumer = subprocess.run(
                importer, stdin=producer.stdout, stdout=subprocess.PIPE, check=False, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()
            raise ImageError(
                f"building {tag} did not finish within {BUILD_TIMEOUT:g} s (mmdebstrap | docker import)"
            ) from None
        finally:
            producer.stdout.close()
        imported = consumer.stdout.decode().strip()
        if producer.wait(timeout=60) != 0 or consumer.returncode != 0:
            if imported:
                self.client.images.remove(imported, force=True)
            raise ImageError(
                f"building {tag} failed: {shlex.join(debootstrap)} exited {producer.returncode}, "
                f"docker import exited {consumer.returncode} (output above)"
            )
        for name in (tag, alias) if alias else (tag,):
            self._tag(imported, name)

    def run(self, cmd: list[str], *, what: str) -> None:
        """Run a build step, showing its output as progress; fail with the image script's own reason."""
        reasons: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            # The output is read line by line as progress; a timer ends a build that runs past its deadline.
            timer = threading.Timer(BUILD_TIMEOUT, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    self.out.write(line)
                    # docker/pgharness.sh explains a refused base image on a line of its own.
                    if m := re.search(r"pgharness: (.*)$", line.rstrip()):
                        reasons.append(m.group(1))
            finally:
                timer.cancel()
        if not timer.is_alive() and proc.returncode == -signal.SIGKILL:
            raise ImageError(f"{what} did not finish within {BUILD_TIMEOUT:g} s")
        if proc.returncode != 0:
            reason = reasons[-1] if reasons else "the build output above says why"
            raise ImageError(f"{what} failed: {reason}")


def ensure_image(spec: ImageSpec, *, out: IO[str] = sys.stderr) -> str:
    """The tag of the node image for `spec`, built if missing or stale.

    One process at a time builds a given image on a given engine (a file lock per tag and
    engine): pytest-xdist workers and parallel CI steps on one engine wait for the first
    build, then reuse it.
    """
    with FileLock(build_lock(spec)):
        return ImageBuilder(spec, out=out).ensure()


def build_lock(spec: ImageSpec | str) -> Path:
    """The lock file held while the image of `spec` (or tag `spec`) is built on this engine (`ensure_image`,
    `upgrade_image`).

    It stays after the build (removing a lock file another process may be waiting on is a race);
    whoever removes a throwaway image removes its lock file too.
    """
    tag = spec if isinstance(spec, str) else spec.tag
    # Per engine: workers spread over several engines build (or load) the image once on each.
    engine = digest(resolve().url)[:12]
    return Path(tempfile.gettempdir()) / f"pgharness-image-{sanitize_tag(tag)}-{engine}.lock"


def debian_image(
    tag: str, packages: tuple[str, ...], *, pg_version: int = 17, mirror: str | None = None, out: IO[str] = sys.stderr
) -> str:
    """An image of Debian `packages` (mmdebstrap | docker import, no registry), tagged `tag`; cached on its inputs.

    For a user's own services next to the nodes (PgBouncer, an application's
    runtime); the Debian suite is the one of PostgreSQL `pg_version`.
    """
    suite = suite_for(pg_version)
    builder = ImageBuilder(ImageSpec(pg_version), mirror=mirror, out=out)
    inputs = base_inputs(suite, mirror, packages)
    if builder.label_of(tag) != inputs:
        builder.build_base(suite, tag, inputs, packages)
    return tag


def upgrade_tag(old_image: str, new_image: str) -> str:
    """The upgrade image's tag for two node images: ``pgharness/upgrade:13-17`` for the harness's own."""

    def short(tag: str) -> str:
        m = re.fullmatch(r"pgharness/postgres:(\d+)(?:-[0-9a-f]{12})?", tag)
        return m.group(1) if m else sanitize_tag(tag)

    return f"pgharness/upgrade:{short(old_image)}-{short(new_image)}"[:128]


def upgrade_image(old_image: str, new_image: str, *, out: IO[str] = sys.stderr) -> str:
    """An image with the server of node image `old_image` beside that of `new_image`, for pg_upgrade; its tag.

    Built from docker/upgrade.Dockerfile (no registry, no package download), cached on its inputs: the two
    images' ids and the recipe. The build fails, naming the libraries, when the old server cannot run
    there (an old image on a newer C library than the new one's, or on another C library).
    """
    alias = upgrade_tag(old_image, new_image)
    client = docker_client()
    try:
        ids = [str(client.images.get(image).id) for image in (old_image, new_image)]
    except docker.errors.ImageNotFound as e:
        raise ImageError(f"no image to upgrade with: {e.explanation or e}") from None
    recipe = [UPGRADE_DOCKERFILE.read_bytes(), (DOCKER_DIR / "pgharness.sh").read_bytes()]
    inputs = digest(*ids, *recipe)
    with FileLock(build_lock(alias)):
        builder = ImageBuilder(ImageSpec(DEFAULT_VERSION), out=out)  # its steps: the spec is not used
        found = builder.adopt(alias, inputs)
        if found:
            return found
        tag = content_tag(alias, inputs)
        builder.say(f"building {tag}: the server of {old_image} beside that of {new_image}")
        cmd = [
            "docker", "build", "--progress=plain",
            "--file", str(UPGRADE_DOCKERFILE),
            "--build-arg", f"OLD_IMAGE={old_image}",
            "--build-arg", f"NEW_IMAGE={new_image}",
            "--label", f"{INPUTS_LABEL}={inputs}",
            "--tag", tag,
            "--tag", alias,
            str(DOCKER_DIR),
        ]  # fmt: skip
        builder.run(cmd, what=f"docker build of {tag}")
    return tag


def image_exists(tag: str) -> bool:
    """Whether the engine has an image tagged `tag`."""
    try:
        docker_client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _versions_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgharness" / "server-versions.json"


def server_version(tag: str) -> str:
    """``postgres -V`` of an image, e.g. ``postgres (PostgreSQL) 17.2 (Debian 17.2-1)``.

    Asked of a container once per image id, then read from a cache
    (``~/.cache/pgharness/server-versions.json``): an id names the image's
    content, so the answer cannot go stale.
    """
    client = docker_client()
    try:
        image_id = str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        raise ImageError(f"no image {tag} on the engine: build it first (pgharness image)") from None
    cache = _versions_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(image_id), str):
        return str(known[image_id])
    code, output = run_container(
        client,
        tag,
        ["postgres", "-V"],
        timeout=60,
        what=f"postgres -V in {tag}",
        entrypoint=[],
        network_mode="none",
        labels={MANAGED_LABEL: "true"},
    )
    if code != 0:
        raise ImageError(f"'postgres -V' failed in {tag}: {output.strip()}")
    version = output.strip()
    known = known if isinstance(known, dict) else {}
    known[image_id] = version
    # Written aside, then renamed: parallel workers never read half a file.
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False, suffix=".tmp") as f:
            json.dump(known, f)
        os.replace(f.name, cache)
    return version
