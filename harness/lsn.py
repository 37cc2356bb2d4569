"""WAL positions (LSNs) and WAL file names, as PostgreSQL prints them."""

from __future__ import annotations

import functools
import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_WALFILE_RE = re.compile(r"^[0-9A-F]{24}$")

#: The default WAL segment size (initdb --wal-segsize), in bytes.
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@functools.total_ordering
class Lsn:
    """A WAL position: ordered, subtractable, printed as ``X/Y`` like PostgreSQL does."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"an LSN is a 64-bit unsigned integer, not {value}")
        self.value = value

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse PostgreSQL's ``pg_lsn`` text form, for example ``0/3000060``."""
        m = _LSN_RE.match(text.strip())
        if not m:
            raise ValueError(f"not an LSN: {text!r} (expected two hex numbers as X/Y, e.g. 0/3000060)")
        return cls(int(m.group(1), 16) << 32 | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lsn) and self.value == other.value

    def __lt__(self, other: Lsn) -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __sub__(self, other: Lsn) -> int:
        """The distance in bytes, as ``pg_wal_lsn_diff`` gives it."""
        return self.value - other.value


def walfile_name(lsn: Lsn, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The WAL file holding `lsn` on `timeline`, as ``pg_walfile_name`` names it."""
    if timeline < 1:
        raise ValueError(f"timelines start at 1, not {timeline}")
    segments_per_xlogid = 0x1_0000_0000 // segment_size
    segno = lsn.value // segment_size
    return f"{timeline:08X}{segno // segments_per_xlogid:08X}{segno % segments_per_xlogid:08X}"


def parse_walfile_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """Split a WAL file name into (timeline, segment number)."""
    if not _WALFILE_RE.match(name):
        raise ValueError(f"not a WAL file name: {name!r} (24 upper-case hex digits)")
    segments_per_xlogid = 0x1_0000_0000 // segment_size
    return int(name[:8], 16), int(name[8:16], 16) * segments_per_xlogid + int(name[16:], 16)


def segment_start(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Lsn:
    """The first LSN of WAL file `name`."""
    return Lsn(parse_walfile_name(name, segment_size)[1] * segment_size)


def previous_walfile(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The WAL file before `name` on the same timeline."""
    timeline, segno = parse_walfile_name(name, segment_size)
    if segno == 0:
        raise ValueError(f"{name} is the first WAL file of its timeline")
    return walfile_name(Lsn((segno - 1) * segment_size), timeline, segment_size)


def parse_timeline_history(text: str) -> dict[int, Lsn]:
    """The switch points of a timeline history file (``00000002.history``): for each
    parent timeline, the position where it ended and the next one began.

    Lines are ``<parent tli> <switch point> <reason>``, tab-separated; blank lines
    and ``#`` comments are skipped, as PostgreSQL's readTimeLineHistory() does.
    """
    switchpoints: dict[int, Lsn] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 2)
        try:
            timeline, switchpoint = int(fields[0]), Lsn.parse(fields[1])
        except (IndexError, ValueError):
            raise ValueError(f"timeline history line {number} is not '<timeline> <LSN> <reason>': {line!r}") from None
        switchpoints[timeline] = switchpoint
    return switchpoints
