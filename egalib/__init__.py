"""egalib: Embedding Graph Alignment knowledge distillation and the baselines it is compared with.

Modules: graph, losses, methods, models, data, train, runs, config, plots, paper.
"""

__version__ = "0.1.0"
