"""What egalib does with its training loop, kept apart from it: the paper's tables (reproduce,
paper, paper_tables, cluster), the regime study, the transfer protocol, teacher pretraining, the
demo, and their commands."""

from ..files import device_name

__all__ = ["device_name"]
