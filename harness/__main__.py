"""``python -m pgharness``: the same as the ``pgharness`` command."""

from pgharness.cli import run

run()
