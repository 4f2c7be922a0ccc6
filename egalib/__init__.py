"""egalib: Embedding Graph Alignment knowledge distillation and the baselines it is compared with.

The core: graph, losses, methods (the method table), views, datasets, models, train (the step
and the loop), capture, runs, config, files. For the notebooks: plots, analysis, tables. Beside
the core: experiments (the paper's tables, transfer, teacher pretraining, the demo). The method
itself is in docs/method.md.
"""

__version__ = "0.1.0"
