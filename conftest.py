"""pytest configuration shared by the unit tests and the nbval notebook run."""


def pytest_collectstart(collector):
    """Under nbval, compare only text/plain: HTML reprs, JS and stderr (progress bars) vary."""
    path = getattr(collector, "path", None)
    if path is not None and str(path).endswith(".ipynb"):
        collector.skip_compare += ("text/html", "application/javascript", "stderr")


def pytest_configure(config):
    """Unit tests use small models: one thread is faster and immune to a busy machine."""
    import torch

    torch.set_num_threads(1)


def pytest_ignore_collect(collection_path, config):
    """tests/browser (Chromium + JupyterLab, about a minute) runs only when named on the
    command line, as `make test-browser` does; `make test` and a plain `pytest` leave it out."""
    if collection_path.name == "browser" and collection_path.parent.name == "tests":
        named = any("tests/browser" in str(arg) for arg in config.args)
        return None if named else True
    return None
