import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared evaluation data (SPATTEN_DATA_DIR); tests that need it skip with a reason when it is absent."""
    root = os.environ.get("SPATTEN_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("SPATTEN_DATA_DIR is not set to the shared data directory")
    return Path(root)


@pytest.fixture(scope="session")
def workloads_dir(data_dir: Path) -> Path:
    return data_dir / "spatten-workloads"
