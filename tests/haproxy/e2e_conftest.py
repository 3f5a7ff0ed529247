"""tests/haproxy/conftest.py as a module of its own name, for the suites
that reuse its fixtures (`binary`, `backend`, `make_haproxy`) from another
folder: pytest imports each folder's conftest.py as `conftest`, so the two
cannot both be imported under that name."""

import importlib.util
import sys
from pathlib import Path

NAME = "haproxy_e2e_conftest"


def load():
    """The module, loaded once per process whichever suite asks first."""
    mod = sys.modules.get(NAME)
    if mod is None:
        spec = importlib.util.spec_from_file_location(NAME, Path(__file__).with_name("conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = mod
        spec.loader.exec_module(mod)
    return mod
