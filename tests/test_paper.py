import math

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
