"""course_lib: the reference implementations, data, training loop, plots and checks of the course."""

from .utils import count_parameters, get_device, set_seed

__all__ = ["set_seed", "get_device", "count_parameters"]
