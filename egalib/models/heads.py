"""The node embedding layer and classifier that sit on each network's features."""

import torch
from torch import nn


class EmbeddingHead(nn.Module):
    """Feature f -> embedding x (linear, D-d) -> logits (linear).

    No activation and no normalisation between the two, as in the method; the classifier's
    logits give the cross-entropy (and KD's soft targets).
    """

    def __init__(self, feature_dim: int, embed_dim: int, num_classes: int):
        super().__init__()
        self.embed = nn.Linear(feature_dim, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(features)
        return x, self.classifier(x)
