"""The documentation site (`make docs`): README, docs/ and the executed notebooks of
docs/notebooks/, rendered by Sphinx and MyST-NB without executing anything. The formulas are
typeset by the MathJax 2 that jupyter-server-mathjax ships, copied into the site, so that they
render offline too (no CDN)."""

from pathlib import Path

import jupyter_server_mathjax

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
html_static_path = [str(Path(jupyter_server_mathjax.__file__).parent / "static")]
mathjax_path = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"  # in the site's _static/
# that MathJax ships only the STIX-Web fonts (as Jupyter's classic notebook configures it)
web_fonts = {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None}
mathjax2_config = {"HTML-CSS": web_fonts}
myst_update_mathjax = False  # MyST's settings are MathJax 3's; MathJax 2 finds \( \) by itself
# links into the repository (../egalib/..., ../notebooks/...) are for GitHub readers
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure"]
