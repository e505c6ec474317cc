"""pytest configuration shared by the unit tests and the nbval notebook run."""

import os


def pytest_collectstart(collector):
    """Under nbval, compare only text/plain: HTML reprs, JS and stderr (progress bars) vary."""
    path = getattr(collector, "path", None)
    if path is not None and str(path).endswith(".ipynb"):
        collector.skip_compare += ("text/html", "application/javascript", "stderr")


def pytest_configure(config):
    """Unit tests use small models: one thread is faster and immune to a busy machine."""
    import torch

    torch.set_num_threads(1)
    _kernels_draw_inline()


def _kernels_draw_inline():
    """nbval's kernels inherit this process's environment. `make` exports MPLBACKEND=agg, under
    which `plt.show()` draws nothing, so a checked cell's stored figure would go missing. Keep
    agg for this process (the unit tests) and let the kernels pick the inline backend, as
    they do in a learner's JupyterLab."""
    backend = os.environ.pop("MPLBACKEND", None)
    if backend:
        import matplotlib

        matplotlib.use(backend)


def pytest_ignore_collect(collection_path, config):
    """tests/browser (Chromium + JupyterLab, about a minute) runs only when named on the
    command line, as `make test-browser` does; `make test` and a plain `pytest` leave it out."""
    if collection_path.name == "browser" and collection_path.parent.name == "tests":
        named = any("tests/browser" in str(arg) for arg in config.args)
        return None if named else True
    return None


NBVAL_OUTPUT_TIMEOUT = 60  # seconds; nbval's own 5 s fails a cell on a heavily loaded machine


def pytest_collection_modifyitems(config, items):
    """nbval waits only 5 s for a finished cell's outputs to arrive; under load (another
    notebook, a browser) the kernel can take longer to send them, and a correct cell then
    fails with 'Timeout of 5 seconds exceeded waiting for output'. Give it a minute."""
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
