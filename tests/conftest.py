"""The harness's own suite. Fixtures come from the pgharness pytest plugin (pytest11 entry point)."""

#: Modules of long tests (a child pytest, the CLI end to end, a workload): collected first, so that on
#: pytest-xdist workers (``-n 2``, which hands tests out in order as workers free up) no worker is left
#: running one of them alone at the end while the other idles. Order within a module is kept.
LONG_FIRST = (
    "test_recipes.py",
    "test_readme.py",
    "test_downstream.py",
    "test_cli.py",
    "test_lifecycle.py",
    "test_hot_standby.py",
)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)
