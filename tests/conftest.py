"""Fixtures shared by several test modules."""
import pytest

from vixml_lib.data.demo import make_demo_dataset
from vixml_lib.data.prepare import prepare_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The bundled `tiny` demo dataset, prepared (one per test module)."""
    d = tmp_path_factory.mktemp("data") / "demo-tiny"
    make_demo_dataset(d, preset="tiny", seed=0)
    prepare_dataset(d)
    return d
