"""The loop: epochs of steps, evaluation, checkpoints, and `fit(config) -> Run`.

Each epoch trains on the training images in random batches (`step.train_step`), then measures
the student and the teacher head on the validation split and writes the run's history and
checkpoint; a killed run resumes from its last checkpoint. The test set is read once, after the
last epoch: the last epoch's student, and the student of the epoch that validation selected. The
uint8 dataset stays on the device; the step's terms are summed there and read once per epoch.
"""

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import losses
from .capture import CapturedStep
from .config import RunConfig, resolve_device
from .datasets import Dataset, load_dataset
from .files import described
from .models.students import fold_batch_norms
from .runs import CheckpointError, Run
from .step import Terms, TrainState, check_weights, train_step
from .streams import epoch_batches
from .teacher_features import ProbeRecipe, TeacherMemo, fit_probe
from .views import ENCODE_CHUNK, eval_view

EpochEnd = Callable[[int, dict], None]  # called with (epoch, its history row) after each epoch
Step = Callable[[torch.Tensor], Terms]


def prepare_data(config: RunConfig, device: torch.device) -> Dataset:
    """The run's images on `device`: at least 2 to train on (batch norm and the graph relate
    two) and 1 to test on."""
    parts = (config.train_size, config.val_size, config.test_size, config.seed)
    data = load_dataset(config.dataset).split(*parts)
    if len(data.train_labels) < 2 or len(data.test_labels) < 1:
        raise ValueError(
            f"{config.dataset} leaves this run {len(data.train_labels)} training and "
            f"{len(data.test_labels)} test images, where at least 2 and 1 are needed; give a "
            "smaller val_size or a dataset with more images."
        )
    return data.to(device)


def step_function(state: TrainState) -> Step:
    """The run's step: `train_step`, or with `capture` that step recorded as a CUDA graph."""
    step = lambda index: train_step(state, index)
    return CapturedStep(step, state) if state.config.capture else step


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM that arrive in the block are raised when it ends (in the main thread,
    the only one whose handlers Python lets a program set). Masking them would not do: the
    kernel then hands the signal to another thread (torch's), and Python still runs the
    handler in the main thread, inside the block."""
    kinds = (signal.SIGINT, signal.SIGTERM)
    unset = None in map(signal.getsignal, kinds)  # a handler set outside Python: left alone
    if unset or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {
        kind: signal.signal(kind, lambda signum, frame: caught.append(signum)) for kind in kinds
    }
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
        for signum in caught:
            signal.raise_signal(signum)


def progress_bar(batches: Iterable, desc: str, progress: bool) -> tqdm:
    """tqdm over `batches`, built with SIGINT and SIGTERM deferred until it is whole: tqdm's
    cleanup of a bar that a Ctrl-C interrupted half-built prints a traceback after the one-line
    stop."""
    with signals_deferred():
        return tqdm(batches, desc=desc, disable=not progress, leave=False)


def sum_steps(step: Step, batches: torch.Tensor, progress: bool = False, desc: str = "") -> dict:
    """One step per row of `batches` (indices); each term summed over the steps. The sums stay
    on the device, stacked in one tensor, and are read back once at the end."""
    keys, total = [], 0
    for index in progress_bar(batches, desc, progress):
        terms = step(index)
        keys, total = list(terms), total + torch.stack([v.float() for v in terms.values()])
    return dict(zip(keys, total.tolist()))


def train_epoch(state: TrainState, step: Step, progress: bool = False) -> dict[str, float]:
    """One pass over the training set in random batches (last partial batch dropped)."""
    n, config = len(state.data.train_labels), state.config
    batches = epoch_batches(n, config.batch_size, state.streams["order"])
    sums = sum_steps(step, batches, progress, f"{config.method} epoch")
    state.schedule.step()
    row = {f"train_{k}": v / len(batches) for k, v in sums.items() if k != "correct"}
    row["train_acc"] = sums["correct"] / batches.numel()
    return row


@torch.no_grad()
def embed(state: TrainState, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Un-augmented embeddings and logits of the student and (if any) the teacher head."""
    nets = state.networks.eval()
    # a compiled student is evaluated as it is: a folded copy would be compiled anew
    student = nets.student if state.config.compile else fold_batch_norms(nets.student)
    chunks = [
        nets.student_outputs(eval_view(chunk, nets.student_view), state.precision, student)
        for chunk in images.split(ENCODE_CHUNK)
    ]
    out = {"xs": torch.cat([c[0] for c in chunks]), "logits_s": torch.cat([c[1] for c in chunks])}
    if state.teacher is not None:
        out["xt"], out["logits_t"] = nets.teacher_head(state.teacher.of_images(images))
    return {k: v.float() for k, v in out.items()}


@torch.no_grad()
def evaluate(state: TrainState, part: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Loss and top-1 of student and teacher head on `part` ("val" or "test"), and EGA's terms
    on its batches; the row's keys start with the part's name."""
    images, labels = getattr(state.data, f"{part}_images"), getattr(state.data, f"{part}_labels")
    out = embed(state, images)
    accuracy = lambda logits: (logits.argmax(1) == labels).float().mean().item()
    row = {
        f"{part}_ce": F.cross_entropy(out["logits_s"], labels).item(),
        f"{part}_acc": accuracy(out["logits_s"]),
        f"teacher_{part}_acc": float("nan"),
    }
    if "xt" in out:
        row[f"teacher_{part}_acc"] = accuracy(out["logits_t"])
        terms = graph_terms_by_batch(out["xs"], out["xt"], state.config.batch_size)
        row.update({f"{part}_{k}": v for k, v in terms.items()})
    return row, {**out, "labels": labels}


def graph_terms_by_batch(xs: torch.Tensor, xt: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean L_node and L_edge over consecutive batches of the training batch size (all batches
    at once, `torch.vmap` over `losses.ega_terms`)."""
    if (groups := len(xs) // batch_size) == 0:
        return {}
    batches = lambda x: x[: groups * batch_size].reshape(groups, batch_size, -1)
    terms = torch.vmap(lambda s, t: torch.stack(losses.ega_terms(s, t)))(batches(xs), batches(xt))
    node, edge = terms.mean(0).tolist()  # one host read
    return {"node": node, "edge": edge}


Selected = dict | None  # the validation-selected epoch: {"epoch", "model": its student's weights}


def start(state: TrainState, run: Run) -> tuple[int, list[dict], Selected]:
    """The run's first epoch, its history so far and its validation-selected epoch: from its
    checkpoint, or from scratch (the pretrained protocol's teacher head first trained as a linear
    probe)."""
    checkpoint = run.load_checkpoint()
    if checkpoint is not None:
        try:
            return resume(state, checkpoint)
        except CheckpointError as error:
            raise CheckpointError(f"{run.path / 'checkpoint.pt'}: {error}") from None
    config = state.config
    if config.protocol == "pretrained" and state.teacher is not None:
        recipe = ProbeRecipe(config.probe_epochs, config.seed, config.teacher_lr)
        fit_probe(state.teacher, state.networks.teacher_head, state.data, recipe)
    return 0, [], None


def resume(state: TrainState, checkpoint: dict) -> tuple[int, list[dict], Selected]:
    """The run as its checkpoint left it, after `epoch` epochs; a checkpoint that does not fit
    this run (a damaged or hand-made file) is one CheckpointError sentence."""
    try:
        state.load_state_dict(checkpoint)
        epoch, history, selected = (checkpoint[k] for k in ("epoch", "history", "selected"))
        if selected is not None:
            check_weights(selected["model"], state.networks.student_state())
        counts = (epoch, len(history), state.schedule.last_epoch)
        if len(set(counts)) > 1 or not 0 < epoch <= state.config.epochs:
            raise ValueError(f"its epoch, history rows and schedule steps are {counts}")
        if not all(is_history_row(row, number) for number, row in enumerate(history, 1)):
            raise ValueError("its history rows are not numbers of epochs 1, 2, ... in turn")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise CheckpointError(
            f"the checkpoint does not fit this run ({described(error)});"
            " delete checkpoint.pt to train the run afresh."
        ) from None
    return epoch, history, selected


def is_history_row(row, epoch: int) -> bool:
    """A row as `epoch_row` writes it: numbers only, its epoch the one expected."""
    plain_number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    return (
        isinstance(row, dict) and row.get("epoch") == epoch and all(map(plain_number, row.values()))
    )


def fit(
    config: RunConfig,
    progress: bool = True,
    on_epoch_end: EpochEnd | None = None,
    memo: TeacherMemo | None = None,
) -> Run:
    """Train (or resume, or just return) the run that `config` names. `memo` holds the teacher's
    work that the runs of one command share (test features, probes); without one, a run shares
    nothing with any other."""
    if not config.run_path.is_dir():  # a device this machine lacks: refused before any folder
        resolve_device(config.device)
    run = Run.open(config)
    with run.lock():  # a second trainer of this folder is refused, naming the first one's pid
        if not run.finished:
            device = resolve_device(config.device)
            run.record_provenance(device)
            data = prepare_data(config, device)
            train_run(TrainState.build(config, data, memo=memo), run, progress, on_epoch_end)
    return run


class DivergenceError(RuntimeError):
    """A training epoch's loss went non-finite; the message names the epoch, term and knobs."""


def check_finite(state: TrainState, row: dict) -> None:
    """Stop a run whose epoch summed a non-finite loss term, before its checkpoint is written:
    the last good checkpoint stays, and the run is not marked finished."""
    bad = [k for k, v in row.items() if k.startswith("train_") and not math.isfinite(v)]
    if bad:
        config, method = state.config, state.method
        knobs = f"--lr (now {config.lr:g}) or the method's weight --beta (now {method.beta:g})"
        options = ", ".join(f"{k}={v}" for k, v in method.defaults.items())
        raise DivergenceError(
            f"run {config.run_name} diverged in epoch {row['epoch']} of {config.epochs}: "
            f"not finite: {', '.join(bad)}; lower {knobs}"
            + (f" or check its options ({options})" if options else "")
            + "; its last good checkpoint is kept and the run is not marked finished."
        )


def epoch_row(state: TrainState, step: Step, epoch: int, progress: bool) -> dict:
    """Train one epoch, then measure it on the validation split (if the run holds one out)."""
    began = time.time()
    row = {"epoch": epoch, "lr": float(state.optimizers["student"].param_groups[0]["lr"])}
    row.update(train_epoch(state, step, progress))
    check_finite(state, row)
    seconds = time.time() - began
    if state.data.val_labels is not None:
        row.update(evaluate(state, "val")[0])
    row.update(seconds=seconds, images_per_s=len(state.data.train_labels) / seconds)
    row["wall_s"] = time.time() - began
    return row


def select(state: TrainState, history: list[dict], selected: Selected) -> Selected:
    """The epoch with the best validation top-1 so far (the first of equals), with a copy of its
    student's weights; None without a validation split."""
    scores = [row["val_acc"] for row in history if "val_acc" in row]
    if not scores or (selected is not None and scores[-1] <= max(scores[:-1])):
        return selected
    model = {k: v.detach().clone() for k, v in state.networks.student_state().items()}
    return {"epoch": history[-1]["epoch"], "model": model}


def test_once(state: TrainState, selected: Selected) -> tuple[dict, dict[str, torch.Tensor]]:
    """The test set, read once training is over: top-1 of the last epoch's student and teacher
    head, then of the validation-selected epoch's student; and the last epoch's embeddings."""
    row, embeddings = evaluate(state, "test")
    tested = {"acc": row["test_acc"], "teacher_acc": row["teacher_test_acc"]}
    tested.update(selected_epoch=None, selected_acc=math.nan)
    if selected is not None:
        tested.update(selected_epoch=selected["epoch"], selected_acc=row["test_acc"])
        if selected["epoch"] != state.config.epochs:
            state.networks.load_state_dict(selected["model"], strict=False)
            tested["selected_acc"] = evaluate(state, "test")[0]["test_acc"]
    return tested, embeddings


def report(config: RunConfig, row: dict, who: str = "") -> None:
    """An epoch's line, naming its run as `who` (the method alone when one run is training)."""
    measured = f"validation top-1 {100 * row['val_acc']:.2f} %, " if "val_acc" in row else ""
    epoch = f"epoch {row['epoch']}/{config.epochs}: {measured}{row['seconds']:.1f} s"
    print(f"[{who or config.method}] {epoch}", flush=True)


def train_run(state: TrainState, run: Run, progress: bool, on_epoch_end: EpochEnd | None) -> None:
    config, (first, history, selected) = state.config, start(state, run)
    step, epoch = step_function(state), first
    try:
        for epoch in range(first, config.epochs):
            history.append(epoch_row(state, step, epoch + 1, progress))
            selected = select(state, history, selected)
            saved = {"epoch": epoch + 1, "history": history, "selected": selected}
            run.save_checkpoint({**saved, **state.state_dict()})
            run.write_history(history)
            if progress:
                report(config, history[-1])
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM through the command line
        raise type(stop)(
            f"{config.run_name}: interrupted in epoch {epoch + 1} of {config.epochs}; run the "
            "same command to resume from its last finished epoch."
        ) from None
    tested, embeddings = test_once(state, selected)
    run.save_embeddings({k: v.cpu() for k, v in embeddings.items()})
    run.finish(history, sum(row["wall_s"] for row in history), tested)
