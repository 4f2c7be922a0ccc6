import pytest

from egalib.config import RunConfig


@pytest.fixture
def smoke(tmp_path):
    """A tiny CPU run config writing under tmp_path; keyword arguments override it."""

    def make(**overrides) -> RunConfig:
        values = dict(runs_dir=str(tmp_path / "runs"), train_size=128, test_size=128)
        return RunConfig.from_profile("smoke", **{**values, **overrides})

    return make
