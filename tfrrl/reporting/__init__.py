"""A report a person can look at: one static HTML page per run (``tfrrl report``).

* :mod:`~tfrrl.reporting.sources` — the run's, its dataset's and its export's files, read as they
  are;
* :mod:`~tfrrl.reporting.figures` — the figures as PNG bytes (losses, UWL weights, recall
  curves);
* :mod:`~tfrrl.reporting.html` — the page: every number a JSON value with its provenance, every
  figure embedded, no JavaScript.
"""

from tfrrl.reporting.html import render, write_report
from tfrrl.reporting.sources import RunSources, load_sources

__all__ = ["RunSources", "load_sources", "render", "write_report"]
