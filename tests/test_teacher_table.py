"""The teacher table: its entries are the teacher's features of the same views, runs with and
without it train alike, and a table that does not fit the run is refused in one sentence."""

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from egalib import teacher_table as table
from egalib import train
from egalib.experiments.cli import build_parser, config_from_args
from egalib.models.teachers import ssl_fmnist
from egalib.step import TrainState, train_step
from egalib.teacher_features import (
    EncodedFeatures,
    TableFeatures,
)
from egalib.views import apply_views, draw_views, views_of, views_per_image


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EGALIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def teacher():
    return ssl_fmnist()  # the shipped weights: real features, not a random network's


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)


def _open(teacher, images, padding, keys=None):
    spec = table.TableSpec("ssl-fmnist", "fashion-mnist", images, padding, keys)
    return table.open_table(EncodedFeatures(teacher, padding), spec)


def _on_the_fly(teacher, images, views, padding):
    return teacher.encode(teacher.view.finish(apply_views(images, views, padding)))


@pytest.mark.parametrize("padding", [1, 4])
def test_every_entry_of_a_full_table_is_the_teachers_feature_of_that_view(teacher, padding):
    images = _images()
    t = _open(teacher, images, padding, None)
    per_image = views_per_image(padding)
    assert t.features.shape == (len(images) * per_image, teacher.feature_dim)
    index = torch.arange(len(images)).repeat_interleave(per_image)
    every = views_of(torch.arange(per_image).repeat(len(images)), padding)
    expected = _on_the_fly(teacher, images[index], every, padding)
    assert torch.allclose(t.lookup(index, every), expected, atol=1e-5, rtol=1e-5)


def test_a_table_of_some_views_finds_them_and_refuses_one_it_lacks(teacher, cache):
    images, padding = _images(), 4
    g = torch.Generator().manual_seed(1)
    index = torch.randint(0, len(images), (40,), generator=g)
    views = draw_views(40, padding, g, "cpu")
    keys = table.view_keys(index, views, padding).unique()
    t = _open(teacher, images, padding, keys)
    assert len(t.features) == len(keys) < len(images) * views_per_image(padding)
    got = t.lookup(index, views)
    assert torch.allclose(got, _on_the_fly(teacher, images[index], views, padding), atol=1e-5)
    shuffled = keys[torch.randperm(len(keys), generator=g)]  # read back: the run's own keys
    again = _open(teacher, images, padding, shuffled)
    assert torch.equal(again.lookup(index, views), got)
    assert [p.suffix for p in sorted(cache.glob("tables/*.*")) if p.suffix != ".lock"] == [
        ".bin",
        ".json",
    ]
    absent = next(k for k in range(len(images) * views_per_image(padding)) if k not in keys)
    missing = views_of(torch.tensor([absent % views_per_image(padding)]), padding)
    with pytest.raises(table.TableError, match="lacks"):
        t.lookup(torch.tensor([absent // views_per_image(padding)]), missing)


def test_the_table_is_built_once_with_its_size_printed_and_a_card(teacher, cache, capsys):
    images = _images()
    _open(teacher, images, 1, None)
    printed = capsys.readouterr().out
    assert "building the teacher table" in printed and "108 views x 1024 features" in printed
    assert "float32" in printed and "MB" in printed
    (card_file,) = (cache / "tables").glob("*.json")
    card = json.loads(card_file.read_text())
    for key in (
        "teacher",
        "dataset",
        "padding",
        "dtype",
        "egalib",
        "commit",
        "wall_s",
        "device",
        "checksum",
        "date",
    ):
        assert key in card, key
    assert card["padding"] == 1 and card["shape"] == [108, 1024] and card["views"] == "all"
    _open(teacher, images, 1, None)
    assert "building" not in capsys.readouterr().out  # read, not rebuilt


@pytest.mark.parametrize(
    "key, value",
    [
        ("padding", 2),
        ("teacher", "clip-vit-b32"),
        ("weights", "0" * 16),
        ("dataset", "cifar100"),
        ("egalib", "0.0.1"),
    ],
)
def test_a_table_built_for_something_else_is_refused_in_one_sentence(teacher, key, value):
    images = _images()
    _open(teacher, images, 1, None)
    spec = table.TableSpec("ssl-fmnist", "fashion-mnist", images, 1, None)
    card = table.table_card(spec, torch.float32, EncodedFeatures(teacher, 1).weights)
    path = table.table_path(card)
    with pytest.raises(table.TableError) as caught:
        table.read(path, {**card, key: value}, torch.float32, None, (108, 1024))
    message = str(caught.value)
    assert f"built for {key}" in message and "delete it" in message and "\n" not in message


def test_a_newer_egalib_refuses_the_table_an_older_one_built(teacher, monkeypatch):
    images = _images()
    _open(teacher, images, 1, None)
    monkeypatch.setattr(table, "__version__", "99.0")
    with pytest.raises(table.TableError, match="built for egalib '0.1.0', but this run needs"):
        _open(teacher, images, 1, None)


def test_a_damaged_table_file_is_refused_by_its_checksum(teacher, cache):
    images = _images()
    _open(teacher, images, 1, None)
    (path,) = (cache / "tables").glob("*.bin")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(table.TableError, match="checksum"):
        _open(teacher, images, 1, None)


def test_of_two_users_of_one_table_one_builds_and_the_other_waits_and_reads(teacher, monkeypatch):
    images, builds, real_build = _images(), [], table.build

    def slow_build(*args):
        builds.append(threading.get_ident())
        time.sleep(0.5)  # the other thread asks for the table meanwhile
        real_build(*args)

    monkeypatch.setattr(table, "build", slow_build)
    results = []
    open_one = lambda: results.append(_open(teacher, images, 1, None))
    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 2
    assert torch.equal(results[0].features, results[1].features)


@pytest.mark.integration
def test_two_local_processes_of_reproduce_build_their_shared_table_once(smoke, cache, capfd):
    """`reproduce --parallel 2` trains cells in two processes (`run_local`): two cells of one seed
    that need one table start together; the flock lets one build it, the other waits and reads."""
    from egalib.experiments.cluster import run_local
    from egalib.runs import Run

    every_view = dict(padding=1, epochs=9, teacher_table=True)  # 2 x 9 epochs >= 18 views
    configs = [smoke(method=method, **every_view) for method in ("ega", "crd")]
    run_local(configs, parallel=2, threads=1)
    assert capfd.readouterr().out.count("building the teacher table") == 1
    assert len(list((cache / "tables").glob("*.bin"))) == 1
    assert all(Run(Path(c.runs_dir) / c.run_name).finished for c in configs)


def test_a_table_too_large_for_the_gpu_stays_on_the_host_with_one_sentence(monkeypatch, capsys):
    t = table.TeacherTable(torch.zeros(1000, 64), None, 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100_000, 10**9))
    assert t.to(torch.device("cuda")) is t
    printed = capsys.readouterr().out.strip()
    assert "does not fit" in printed and "--no-teacher-table" in printed
    assert printed.count("\n") == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "method, protocol", [("ega", "pretrained"), ("ega", "joint"), ("crd", "pretrained")]
)
def test_a_run_with_the_table_trains_as_one_without_it(smoke, tmp_path, method, protocol):
    histories = []
    for use in (False, True):
        config = smoke(
            method=method,
            protocol=protocol,
            epochs=2,
            teacher_table=use,
            runs_dir=str(tmp_path / f"runs-{use}"),
        )
        histories.append(train.fit(config, progress=False).history)
    without, with_table = histories
    measured = [c for c in without.columns if c.startswith(("train_", "val_", "teacher_"))]
    assert len(measured) > 6
    pd.testing.assert_frame_equal(without[measured], with_table[measured], atol=1e-5, rtol=1e-4)


def test_a_short_run_tables_only_the_views_it_draws_and_a_long_one_all(smoke, tmp_path):
    cpu = torch.device("cpu")
    short = smoke(method="ega", epochs=2, teacher_table=True)
    state = TrainState.build(short, train.prepare_data(short, cpu))
    keys = state.teacher.table.keys
    n = len(state.data.train_labels)
    assert keys is not None and len(keys) <= 2 * n  # two epochs: at most two views per image
    drawn = table.planned_keys(short, n, cpu)
    assert torch.equal(keys, drawn.unique())  # the table's keys: sorted, without repeats
    seen = []
    step = lambda index: seen.append(index) or train_step(state, index)
    for _ in range(short.epochs):  # the run's own steps look up only planned views
        train.train_epoch(state, step)
    assert len(seen) == short.epochs * (n // short.batch_size)
    long = smoke(method="ega", epochs=81, teacher_table=True, train_size=16, batch_size=8)
    state = TrainState.build(long, train.prepare_data(long, cpu))
    assert state.teacher.table.keys is None  # 2 x 81 epochs >= 162 views: all of them
    assert len(state.teacher.table.features) == 16 * views_per_image(long.padding)


def test_vanilla_without_a_teacher_in_its_step_builds_no_table(smoke, cache):
    config = smoke(method="vanilla", teacher_table=True)
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    assert not isinstance(state.teacher, TableFeatures) and not (cache / "tables").exists()


def test_the_flag_sets_the_table_either_way_and_the_profiles_choose_by_default():
    parser = build_parser()
    config = lambda *flags: config_from_args(parser.parse_args(["train", *flags]))
    assert config("--profile", "demo").teacher_table is True
    assert config("--profile", "smoke").teacher_table is False
    assert config("--profile", "demo", "--no-teacher-table").teacher_table is False
    assert config("--profile", "smoke", "--teacher-table").teacher_table is True
    assert config("--profile", "paper").teacher_table is True


def test_removing_the_cache_folder_rebuilds_the_table(teacher, cache):
    images = _images()
    first = _open(teacher, images, 1, None)
    kept = first.features.clone()
    shutil.rmtree(cache)
    again = _open(teacher, images, 1, None)
    assert torch.equal(kept, again.features)


def _built(cache):
    (path,) = (cache / "tables").glob("*.bin")
    return path


def test_other_teacher_weights_build_another_table(teacher, cache, capsys):
    images = _images()
    _open(teacher, images, 1)
    other = ssl_fmnist()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # the same name, changed weights
    _open(other, images, 1)
    assert capsys.readouterr().out.count("building the teacher table") == 2
    assert len(list((cache / "tables").glob("*.bin"))) == 2


def test_a_deleted_table_file_is_rebuilt_and_a_killed_builds_leftover_removed(teacher, cache):
    images = _images()
    kept = _open(teacher, images, 1).features.clone()
    path = _built(cache)
    path.unlink()
    leftover = path.parent / f".{path.name}.abc123.tmp"  # what a killed build leaves
    leftover.write_bytes(b"half")
    assert torch.equal(_open(teacher, images, 1).features, kept)
    assert not leftover.exists()


CARD_DAMAGES = {
    "no checksum": lambda card: card.pop("checksum"),
    "one row short": lambda card: card["shape"].__setitem__(0, card["shape"][0] - 1),
    # the file's size and checksum still agree: this card was once read as (1024, 108)
    "rows and dim swapped": lambda card: card.update(shape=card["shape"][::-1]),
}


@pytest.mark.parametrize("damage", CARD_DAMAGES)
def test_a_damaged_card_is_one_sentence_naming_the_file(teacher, cache, damage):
    images = _images()
    _open(teacher, images, 1)
    card_path = _built(cache).with_suffix(".json")
    card = json.loads(card_path.read_text())
    CARD_DAMAGES[damage](card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(table.TableError) as caught:
        _open(teacher, images, 1)
    message = str(caught.value)
    assert str(_built(cache)) in message and "delete" in message and "\n" not in message


READ_AS_ANOTHER_USER = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_teacher_table import _images, _open
from egalib.models.teachers import ssl_fmnist
features = _open(ssl_fmnist(), _images(), 2).features
torch.save(features, sys.argv[2])
"""


@pytest.mark.integration
def test_a_valid_table_in_a_cache_that_cannot_be_written_is_read_without_a_lock(teacher, cache):
    """Root writes anywhere; the reader runs as root without the capability that lets it
    (`setpriv`), on a cache whose folders are read-only, as another user's cache would be."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to read the cache without the right to write it")
    built = _open(teacher, _images(), 2).features
    tables = cache / "tables"
    for lock in tables.glob("*.lock"):
        lock.unlink()
    before = sorted(p.name for p in tables.iterdir())
    for folder in (tables, cache):
        folder.chmod(0o555)
    out = cache.parent / "features.pt"
    no_override = "-dac_override,-dac_read_search"
    command = ["setpriv", f"--bounding-set={no_override}", f"--inh-caps={no_override}", "--"]
    command += [sys.executable, "-c", READ_AS_ANOTHER_USER, str(Path(__file__).parent), str(out)]
    try:
        read = subprocess.run(command, capture_output=True, text=True, timeout=300)
        probe = subprocess.run([*command[:4], "touch", str(tables / "x")], capture_output=True)
    finally:
        for folder in (cache, tables):
            folder.chmod(0o755)
    assert read.returncode == 0, read.stderr[-2000:]
    assert torch.equal(torch.load(out), built)
    assert sorted(p.name for p in tables.iterdir()) == before  # no lock, nothing written
    assert probe.returncode != 0  # the check can fail: that process could not write there
