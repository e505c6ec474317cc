"""course_lib: the reference implementations, data, training loop, plots and checks of the course."""

from .utils import configure_threads, count_parameters, get_device, set_seed

# The course's one thread policy (docs/CONTRIBUTING.md, "Threads"): one CPU thread unless
# COURSE_THREADS says otherwise, so a busy laptop cannot make a notebook crawl.
configure_threads()

__all__ = ["set_seed", "get_device", "count_parameters", "configure_threads"]
