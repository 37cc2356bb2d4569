"""Sphinx configuration of the pgharness documentation (``make docs``; warnings are errors)."""

from __future__ import annotations

project = "pgharness"
author = "the pgharness developers"
copyright = "2026, the pgharness developers"

extensions = [
    "myst_parser",  # the guides and recipes are Markdown
    "sphinx.ext.autodoc",  # the API reference, from the docstrings
    "sphinx.ext.viewcode",
    "sphinx_click",  # the command line's reference, from click
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "screenshots"]
html_theme = "furo"
html_title = "pgharness"
# `Name` in a docstring is a cross-reference when it resolves, plain code otherwise.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
# An ambiguous short name (`nodes`: Cluster.nodes or Plan.nodes) links to one of them, silently.
suppress_warnings = ["ref.python"]
