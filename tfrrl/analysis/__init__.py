"""Collapse and diversity analysis of trained runs (``tfrrl analyze``).

* :mod:`tfrrl.analysis.spectrum` — singular-value spectra and Information Abundance (Tencent
  paper §7.2; Crocodile §3.1), per table, per domain and per entity-frequency bucket;
* :mod:`tfrrl.analysis.diversity` — the Diversity Index DI^AF / DI^SF (Crocodile §3.2, Eq. 1–2)
  and the preference-conflict samples D_con(i, j) it is computed on;
* :mod:`tfrrl.analysis.collect` — embedding tables and expert outputs pulled out of a model;
* :mod:`tfrrl.analysis.report` — the whole analysis of a run folder (``analysis.json``).
"""
