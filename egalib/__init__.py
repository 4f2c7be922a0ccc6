"""egalib: Embedding Graph Alignment knowledge distillation and its baselines (docs/method.md).

The core: graph, losses, methods, views, datasets, models, train (the step and the loop),
capture, runs, config, files; for the notebooks: plots, analysis, tables; beside the core:
experiments (the paper's tables, the regime study, transfer, teacher pretraining, the demo)."""

__version__ = "0.1.0"
