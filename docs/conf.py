"""The documentation site (`make docs`): README, docs/ and the executed notebooks of
docs/notebooks/, rendered by Sphinx and MyST-NB without executing anything."""

project = "egalib"
author = "the egalib developers"
extensions = ["myst_nb"]
root_doc = "index"
nb_execution_mode = "off"  # the published copies are shown as `make publish` wrote them
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "README.md"]  # README.md is the GitHub view of the index
html_title = "egalib: Embedding Graph Alignment, reproducibly"
html_theme = "alabaster"
html_static_path = []
# links into the repository (../egalib/..., ../notebooks/...) are for GitHub readers
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure"]
