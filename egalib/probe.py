"""The teacher's head as a linear probe: projection + classifier trained on frozen features.

In the `pretrained` protocol the teacher's head is trained first and then frozen. Its inputs are
the frozen encoder's features of un-augmented training images, computed once and cached, so the
probe costs one pass of the teacher however many epochs it runs (a documented simplification of
the authors' probe script, which re-encodes augmented images every epoch).
"""

import torch
import torch.nn.functional as F

from .data import Dataset, eval_view
from .graph import EmbeddingHead
from .models import Teacher

MILESTONES = (150 / 240, 180 / 240, 210 / 240)  # METHOD.md's lr decay points, as fractions


def lr_schedule(
    optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """METHOD.md's schedule scaled to `epochs`: lr x0.1 at 150/240, 180/240 and 210/240 of them."""
    milestones = [round(f * epochs) for f in MILESTONES]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


@torch.no_grad()
def encode_all(teacher: Teacher, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Teacher features of every image (un-augmented view), batch by batch."""
    chunks = [
        teacher.encode(eval_view(images[i : i + batch_size], teacher.view))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def train_head(
    head: EmbeddingHead, features: torch.Tensor, labels: torch.Tensor, epochs: int,
    seed: int = 0, lr: float = 0.01, batch_size: int = 64,
) -> EmbeddingHead:  # fmt: skip
    """SGD (momentum 0.9, weight decay 5e-4), lr x0.1 at 150/240, 180/240, 210/240 of the epochs."""
    generator = torch.Generator(device=features.device).manual_seed(seed)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = lr_schedule(optimizer, epochs)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=features.device, generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(head(features[batch])[1], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    return head.eval()


@torch.no_grad()
def head_accuracy(head: EmbeddingHead, features: torch.Tensor, labels: torch.Tensor) -> float:
    return (head(features)[1].argmax(1) == labels).float().mean().item()


def linear_probe_accuracy(
    teacher: Teacher, data: Dataset, epochs: int, embed_dim: int = 256, seed: int = 0
) -> float:
    """Test top-1 of a head trained on the frozen teacher's features of `data`'s training set."""
    torch.manual_seed(seed)
    device = data.train_images.device
    teacher = teacher.to(device)
    head = EmbeddingHead(teacher.feature_dim, embed_dim, data.num_classes).to(device)
    train_head(head, encode_all(teacher, data.train_images), data.train_labels, epochs, seed)
    return head_accuracy(head, encode_all(teacher, data.test_images), data.test_labels)
