"""The training step recorded as one CUDA graph and replayed: a wrapper around that same step.

A small batch cannot keep a GPU busy while the host launches the step's hundreds of kernels one
by one; a replayed graph is one launch. It knows of the run only what the graph reads.
"""

import contextlib
from collections.abc import Callable, Iterable

import torch

from .files import first_line

Step = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class CapturedStep:
    """`step` recorded as a CUDA graph at its first full batch, then replayed for each full batch
    (a smaller one runs eagerly). `state` is the run's `TrainState`: what the graph reads of it
    is its optimisers, its random streams and its batch size, and `preserved()` restores it.

    Recording needs warm-up steps (cuBLAS and cuDNN set-up): they run on the first batch inside
    `preserved()`, so the run trains as if they had not happened. What the graph reads is made
    static first: the batch's index (copied in before each replay), the learning rates (tensors
    the schedule updates in place), the momentum buffers (made now, zero, as SGD's first step
    assumes) and the generators (registered, so each replay draws new crops and flips). The
    .grad tensors belong to the graph; each replay rewrites them.
    """

    WARMUP_STEPS = 3

    def __init__(self, step: Step, state):
        self.step, self.state, self.replay = step, state, None

    def __call__(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(index) != self.state.config.batch_size:
            return self.step(index)
        if self.replay is None:
            self.record(index)
        self.index.copy_(index)
        self.replay()
        return dict(zip(self.keys, self.values.clone()))  # the next replay rewrites self.values

    def record(self, index: torch.Tensor) -> None:
        self.index = index.clone()
        with self.state.preserved(), side_stream(index.device):
            for _ in range(self.WARMUP_STEPS):
                self.step(self.index)
        for optimizer in self.state.optimizers.values():
            make_static(optimizer)
            optimizer.zero_grad(set_to_none=True)
        try:
            self.replay = record_graph(self.recorded_step, self.state.streams.values())
        except RuntimeError as error:  # e.g. an operation that CUDA cannot record
            reason = first_line(error) or type(error).__name__
            raise RuntimeError(
                f"recording the training step as a CUDA graph failed ({reason}); train without "
                f"capture (RunConfig.capture=False, no --capture), which computes the same step."
            ) from error

    def recorded_step(self) -> None:
        """What the graph records: one step on the static index, its terms in one tensor."""
        terms = self.step(self.index)
        self.keys, self.values = list(terms), torch.stack([v.float() for v in terms.values()])


@contextlib.contextmanager
def side_stream(device: torch.device):
    """Run the block on a fresh CUDA stream, ordered after and before the current one (where
    warm-up before a capture must run)."""
    side, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        yield
    current.wait_stream(side)


def record_graph(run: Callable[[], None], generators: Iterable[torch.Generator] = ()) -> Callable:
    """`run` recorded as a CUDA graph that draws from `generators`: its replay (recording runs
    no kernel; the first replay does)."""
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def make_static(optimizer: torch.optim.Optimizer) -> None:
    """SGD made ready for a graph: learning rates as device tensors (a float would be baked into
    the kernels), momentum buffers made before recording (inside, each replay would remake it)."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p)
