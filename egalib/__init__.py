"""egalib: Embedding Graph Alignment knowledge distillation and its baselines (docs/method.md).

The core: graph, losses (check: their input shapes), methods, step (one training step and the
state it uses), train (the loop and `fit`), streams, views, teacher_features and teacher_table
(the frozen teacher's features, encoded or looked up), capture, datasets, models, runs, config,
files; for the notebooks: plots, analysis; beside the core, importing it
and never imported by it: experiments (the paper's tables and their layouts, paper_tables, the
regime study, transfer, teacher pretraining, the demo). What the library reads at run time
(teacher weights, the paper's numbers, shipped results) is package data in egalib/data/."""

__version__ = "0.1.0"
