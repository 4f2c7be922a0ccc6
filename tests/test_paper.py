import math

import pytest

from egalib.experiments import paper
from egalib.experiments.paper import paper_results, paper_top1
from egalib.methods import METHODS


def test_paper_numbers_are_looked_up_by_cell():
    assert paper_top1("clip-vit-b32", "resnet8x4", "cifar100", "ega", "pretrained") == 76.65
    assert paper_top1("clip-vit-b32", "vgg13", "cifar100", "ccl", "joint") == 77.54
    assert paper_top1("clip-vit-b32", "resnet8x4", "stl10", "ega+kd", "pretrained") == 84.36
    assert math.isnan(paper_top1("ssl-fmnist", "small-cnn", "fashion-mnist", "ega", "pretrained"))
    assert math.isnan(
        paper_top1("clip-vit-b32", "shufflenetv1", "cifar100", "fitnet", "pretrained")
    )


def test_every_named_paper_method_is_an_egalib_method():
    named = set(paper_results().query("table != 'supervised-teachers'")["egalib_method"])
    assert named <= set(METHODS)
    assert len(paper_results()) == 128


def edit_results(tmp_path, monkeypatch, edit):
    """A copy of the shipped results.csv, edited by `edit` (a function of its text), read in its
    place."""
    shipped = (paper.PACKAGE_DATA / "paper" / "results.csv").read_text()
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "results.csv").write_text(edit(shipped))
    monkeypatch.setattr(paper, "PACKAGE_DATA", tmp_path)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda text: text.replace(",top1,", ",score,", 1), "lacks the columns top1"),
        (lambda text: text.replace(",71.55,", ",71.5x,", 1), "needs a number .* in every top1"),
        (
            lambda text: text.replace("sequential", "first", 1),
            "needs .* a protocol of sequential or",
        ),
        (lambda text: "", "is not a CSV table"),
    ],
    ids=["renamed column", "word for a number", "unknown protocol", "empty"],
)
def test_an_edited_results_csv_is_refused_in_one_sentence(tmp_path, monkeypatch, edit, reason):
    edit_results(tmp_path, monkeypatch, edit)
    with pytest.raises(ValueError, match=f"results.csv {reason}") as caught:
        paper_results()
    assert "\n" not in str(caught.value) and str(caught.value).endswith(
        "restore the file from git."
    )


def test_the_cell_the_poster_left_empty_is_read_as_missing():
    empty = paper_results().query("top1 != top1")  # NaN
    assert list(empty["note"]) == ["value missing in the poster"]
