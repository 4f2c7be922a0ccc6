"""The paper's teachers (CLIP through open_clip, ImageNet ResNets through torchvision): built
with random weights (no download, no network), shapes, freezing, views, one distillation step,
and the one-sentence error when weights are missing offline."""

import copy
import re
import urllib.error

import pytest
import torch
import torchvision

from egalib import losses, models
from egalib.models import teachers
from egalib.views import ViewSpec, train_view

CLIP_DIMS = {"clip-vit-b32": 512, "clip-vit-b16": 512, "clip-rn101": 512, "clip-rn50": 1024}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SUPERVISED = ("supervised-rn50", "supervised-rn101")
BATCH = 2


def _build(name: str) -> models.Teacher:
    torch.manual_seed(0)
    return models.teacher(name, pretrained=False)


@pytest.fixture(scope="module", params=sorted(CLIP_DIMS))
def clip_teacher(request):
    """One random-weight CLIP teacher at a time, built once per module (ViT-B/16 is 86M)."""
    return request.param, _build(request.param)


@pytest.fixture(scope="module", params=SUPERVISED)
def supervised_teacher(request):
    return request.param, _build(request.param)


@pytest.fixture(scope="module")
def vit_b32():
    return _build("clip-vit-b32")


@pytest.fixture
def uint8_batch():
    return torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8)


def _assert_frozen(teacher: models.Teacher) -> None:
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not any(m.training for m in teacher.modules())


def test_clip_teachers_are_registered_next_to_the_default():
    assert list(models.TEACHERS)[0] == "ssl-fmnist"
    assert set(CLIP_DIMS) | set(SUPERVISED) <= set(models.TEACHERS)


def test_clip_teacher_interface(clip_teacher, uint8_batch):
    name, teacher = clip_teacher
    assert teacher.feature_dim == CLIP_DIMS[name]
    assert (teacher.input_size, teacher.in_channels) == (224, 3)
    assert teacher.mean == pytest.approx(CLIP_MEAN) and teacher.std == pytest.approx(CLIP_STD)
    _assert_frozen(teacher)

    view = train_view(uint8_batch, teacher.view, torch.Generator().manual_seed(0))
    assert view.shape == (BATCH, 3, 224, 224) and view.dtype == torch.float32
    features = teacher.encode(view)
    assert features.shape == (BATCH, CLIP_DIMS[name]) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    # encode_image without normalisation: rows are not forced onto the unit sphere
    assert not torch.allclose(features.norm(dim=1), torch.ones(BATCH), atol=1e-3)


def assert_bfloat16_weights_keep_features(teacher: models.Teacher, view: torch.Tensor) -> None:
    """`cast_weights` (what the CUDA loop does to every teacher): all weights in bf16, float32
    features within bf16 rounding of the fp32 teacher's, the original left as it was."""
    reference = teacher.encode(view)
    low = copy.deepcopy(teacher).cast_weights()
    assert {p.dtype for p in low.parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    features = low.encode(view)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    cosine = torch.nn.functional.cosine_similarity(features, reference, dim=1)
    assert cosine.min() > 0.999
    assert (features - reference).norm() / reference.norm() < 0.03
    _assert_frozen(low)


# Whole 224-pixel towers in bf16: seconds each where the CPU has native bf16, up to 18 s where
# it is emulated (AVX2 only); the small teachers below check the same cast in the fast tests.
@pytest.mark.integration
def test_clip_teachers_in_bfloat16(clip_teacher, uint8_batch):
    _, teacher = clip_teacher
    assert_bfloat16_weights_keep_features(teacher, teacher.view.finish(uint8_batch))


@pytest.mark.integration
def test_supervised_teachers_in_bfloat16(supervised_teacher, uint8_batch):
    _, teacher = supervised_teacher
    assert_bfloat16_weights_keep_features(teacher, teacher.view.finish(uint8_batch))


def test_default_teachers_in_bfloat16():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    teacher = models.teacher("ssl-fmnist")  # the shipped weights
    assert_bfloat16_weights_keep_features(teacher, teacher.view.finish(images))
    teacher = _build("supervised-wrn40")
    colour = images.expand(-1, 3, -1, -1)
    assert_bfloat16_weights_keep_features(teacher, teacher.view.finish(colour))


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(4, 1, 28, 28, dtype=torch.uint8),  # the dataset's own images, not a view
        torch.zeros(4, 28, 28, 1),  # channels last
        torch.zeros(4, 1, 32, 32),  # not resized to the teacher's size
    ],
)
def test_images_the_teacher_does_not_take_are_one_sentence(images):
    teacher = models.teacher("ssl-fmnist")
    shape = re.escape(str(tuple(images.shape)))
    expected = rf"shape \(N, 1, 28, 28\), got a {images.dtype} tensor of shape {shape}; make them"
    with pytest.raises(ValueError, match=expected + r".*eval_view\(images, teacher.view\)"):
        teacher.encode(images)


def test_openai_vit_weights_get_quick_gelu_and_no_text_tower(vit_b32):
    """OpenAI's CLIP was trained with QuickGELU: a plain-GELU tower would misread its weights."""
    from open_clip.transformer import QuickGELU

    assert any(isinstance(m, QuickGELU) for m in vit_b32.encoder.modules())
    assert not any("token_embedding" in k for k in vit_b32.state_dict())


def test_one_distillation_step_trains_the_student_only(vit_b32, uint8_batch):
    teacher = vit_b32
    torch.manual_seed(0)
    student = models.student("resnet8x4")
    student_head = models.EmbeddingHead(student.feature_dim, 256, 10)
    teacher_head = models.EmbeddingHead(teacher.feature_dim, 256, 10)
    generator = torch.Generator().manual_seed(0)
    student_in = train_view(uint8_batch, ViewSpec(32, 3, CLIP_MEAN, CLIP_STD), generator)
    teacher_in = train_view(uint8_batch, teacher.view, generator)

    xs, _ = student_head(student(student_in))
    xt, _ = teacher_head(teacher.encode(teacher_in))
    loss = losses.ega(xs, xt)
    loss.backward()

    assert torch.isfinite(loss)
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_supervised_teachers(supervised_teacher, uint8_batch):
    name, teacher = supervised_teacher
    assert (teacher.feature_dim, teacher.input_size, teacher.in_channels) == (2048, 224, 3)
    assert teacher.mean == teachers.IMAGENET_MEAN and teacher.std == teachers.IMAGENET_STD
    _assert_frozen(teacher)
    features = teacher.encode(teacher.view.finish(uint8_batch))
    assert features.shape == (BATCH, 2048) and features.dtype == torch.float32


def test_supervised_weights_load_from_the_cache_folder(monkeypatch, tmp_path):
    """The downloaded checkpoint (with ImageNet's fc) loads into the headless ResNet."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet50()
    calls = []

    def fake_download(url, model_dir, **kwargs):
        calls.append(model_dir)
        return reference.state_dict()

    monkeypatch.setenv("EGALIB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    teacher = models.teacher("supervised-rn50", pretrained=True)
    assert calls == [str(tmp_path / "torchvision")]
    assert torch.equal(teacher.encoder.conv1.weight, reference.conv1.weight)


def _assert_one_clear_sentence(error, name, folder):
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert name in message and str(folder) in message and "network" in message
    assert "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_clip_weights_missing_offline_raise_one_clear_sentence(monkeypatch, tmp_path):
    # the submodule itself: the package loads it lazily, on the first use elsewhere
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("EGALIB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(teachers.WeightsNotFoundError) as error:
        models.teacher("clip-vit-b32", pretrained=True)
    _assert_one_clear_sentence(error, "clip-vit-b32", tmp_path / "clip")
    assert "open_clip_model.safetensors" in str(error.value)


def test_supervised_weights_missing_offline_raise_one_clear_sentence(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("EGALIB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(teachers.WeightsNotFoundError) as error:
        models.teacher("supervised-rn101", pretrained=True)
    _assert_one_clear_sentence(error, "supervised-rn101", tmp_path / "torchvision")
    assert "resnet101-" in str(error.value)
