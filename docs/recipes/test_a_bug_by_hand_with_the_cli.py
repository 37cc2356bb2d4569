"""Reproducing a bug by hand, as a script: the same pgharness commands a person types after make up."""

import random
import socket
import subprocess
import sys
import uuid


def pgharness(*args):
    """Run ``pgharness ARGS`` (``python -m pgharness``, as the installed command runs); return its output."""
    done = subprocess.run([sys.executable, "-m", "pgharness", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def free_port():
    """A port free on 127.0.0.1 now, below the kernel's ephemeral range (where the engine publishes)."""
    while True:
        port = random.SystemRandom().randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def test_exercise_26_1_by_hand(harness_image):
    name = ["--name", f"recipe-{uuid.uuid4().hex[:8]}"]
    pgharness("up", *name, "--primary-port", str(free_port()), "--standby-port", str(free_port()))
    try:
        # Read on the standby what the primary wrote; promote the standby once the primary is gone.
        pgharness("sql", *name, "primary", "CREATE TABLE hoge AS SELECT 1 AS col")
        assert pgharness("sql", *name, "standby", "SELECT pg_is_in_recovery()") == "True"
        pgharness("kill", *name, "primary")
        pgharness("promote", *name, "standby")
        pgharness("sql", *name, "standby", "INSERT INTO hoge VALUES (2)")
        assert pgharness("sql", *name, "standby", "SELECT count(*) FROM hoge") == "2"
    finally:
        pgharness("down", *name)
