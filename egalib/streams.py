"""The run's random numbers: one generator per use, and each epoch's batches drawn from one.

For one seed every method trains on the same batches and views: what one method draws (CRD's
negatives) never moves what another sees, and vanilla, which may skip the teacher's view, draws
the same student views as EGA.
"""

import torch

STREAMS = ("order", "student_view", "teacher_view", "method")
Streams = dict[str, torch.Generator]


def random_streams(seed: int, device: torch.device) -> Streams:
    """One generator per entry of STREAMS; stream i of seed s starts at len(STREAMS) * s + i."""
    make = lambda i: torch.Generator(device=device).manual_seed(len(STREAMS) * seed + i)
    return {name: make(i) for i, name in enumerate(STREAMS)}


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's batches of sample indices, one per row, in random order (the last partial
    batch dropped; fewer samples than a batch: one batch of them all)."""
    order = torch.randperm(n, device=generator.device, generator=generator)
    return order[: n - n % batch_size].view(-1, batch_size) if n >= batch_size else order[None]
