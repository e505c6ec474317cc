"""One module per notebook: what exists only to keep that notebook's cells short.

`lessons/<slug>.py` belongs to `notebooks/NN_<slug>.ipynb`: its experiments, inspection helpers
and explorers. A lesson may import the core, the shared rooms and earlier lessons, never a later one.
"""
