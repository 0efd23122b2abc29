"""The contracts between stages, defined once.

* :mod:`~tfrrl.artifacts.prepared` — the prepared dataset written by the Beam link
  (``tfrrl prepare``) and read by the trainer, the evaluation, the indexer and the user store;
* :mod:`~tfrrl.artifacts.run_folder` — the run folder written by ``tfrrl train`` and read by
  ``evaluate``, ``analyze``, ``export`` and the reports;
* :mod:`~tfrrl.artifacts.export_folder` — the export folder written by ``tfrrl export`` and
  ``tfrrl index`` and read by the PredictionService and the matching service.

Each module names the files and folders of its artifact and offers small path helpers; it imports
nothing heavier than the standard library, so every stage (and a process without TensorFlow)
can depend on it.
"""
