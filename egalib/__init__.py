"""egalib: Embedding Graph Alignment knowledge distillation and its baselines (docs/method.md).

The core: graph, losses (check: their inputs), methods, step (one training step and the
state it uses), train (the loop and `fit`), streams, views, teacher_features and teacher_table
(the frozen teacher's features, encoded or looked up), capture, datasets (image_folders: class
folders of image files), models, runs, config, files; plugins and own_data (your own methods and
data); for the notebooks: plots, analysis; beside the core, importing it
and never imported by it: experiments (the paper's tables and their layouts, paper_tables, the
regime and weights studies, transfer, teacher pretraining, the demo, and the command line that
`python -m egalib` runs). What the library reads at run time
(teacher weights, the paper's numbers, shipped results) is package data in egalib/data/."""

__version__ = "0.1.0"

# the public names for extending egalib (docs/extending.md), imported when first used
PUBLIC = {
    "register_method": "plugins",
    "register_dataset": "plugins",
    "load_plugins": "plugins",
    "Method": "methods",
    "ImageFolder": "own_data",
    "TensorSource": "own_data",
}


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'egalib' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
