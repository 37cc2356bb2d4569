"""Check that the built API reference documents every public name: each name ``pgharness`` exports, and
every public method and property of the classes a scenario works with (``make docs`` runs this after the
build; a missing one fails it, named).

    python docs/check_api.py BUILD_DIR
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

import pgharness
from pgharness.archive import Archive
from pgharness.background import BackgroundSession, Pending
from pgharness.backup import Backups
from pgharness.load import CommitLog, WriteLoad
from pgharness.logical import Publication, Subscription
from pgharness.tools import BackgroundTool, Tools

#: The classes whose every public method and property the reference must show.
CLASSES = [
    pgharness.Cluster, pgharness.Node, Subscription, Publication, Backups, Archive, BackgroundSession, Pending,
    WriteLoad, CommitLog, pgharness.RecoveryTarget, Tools, BackgroundTool,
]  # fmt: skip


def documented(build: Path) -> set[str]:
    with (build / "objects.inv").open("rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    return {name for entries in inventory.values() for name in entries}


def missing(names: set[str]) -> list[str]:
    found = []
    for export in pgharness.__all__:
        module = getattr(pgharness, export).__module__
        if f"pgharness.{export}" not in names and f"{module}.{export}" not in names:
            found.append(f"{module}.{export} (exported as pgharness.{export})")
    for cls in CLASSES:
        paths = {f"pgharness.{cls.__name__}", f"{cls.__module__}.{cls.__name__}"}
        for attr, value in inspect.getmembers(cls):
            if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            if not any(f"{path}.{attr}" in names for path in paths):
                found.append(f"{cls.__module__}.{cls.__name__}.{attr}")
    return found


if __name__ == "__main__":
    gaps = missing(documented(Path(sys.argv[1])))
    for gap in gaps:
        print(f"docs: not in the API reference: {gap}", file=sys.stderr)
    print(f"docs: the API reference has every public name ({len(pgharness.__all__)} exports, {len(CLASSES)} classes)"
          if not gaps else f"docs: {len(gaps)} public names missing", file=sys.stderr)  # fmt: skip
    sys.exit(1 if gaps else 0)
