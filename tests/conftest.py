import os
import sys
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


@pytest.fixture(scope="session")
def spatten_sim() -> list[str]:
    """The `spatten-sim` command of the interpreter running the tests (its venv's script, not whatever is on PATH)."""
    script = Path(sys.executable).parent / "spatten-sim"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from spatten.hwsim.cli import main; sys.exit(main())"]
