"""Report: one self-contained HTML page of what the loop sees and did.

* :mod:`~cl_plugin.report.build`: reads the store (and registry) into the report's figures and writes the
  page (:func:`build_report`);
* :mod:`~cl_plugin.report.data`: the figures one report holds;
* :mod:`~cl_plugin.report.html`: the page's sections, every value escaped;
* :mod:`~cl_plugin.report.plots`: inline SVG charts.

The report reads every stage before it and is imported by none.
"""

from cl_plugin.report.build import MIN_LABELED, SECTIONS, build_report

__all__ = ["MIN_LABELED", "SECTIONS", "build_report"]
