"""The harness's own suite. Fixtures come from the pgharness pytest plugin (pytest11 entry point)."""
