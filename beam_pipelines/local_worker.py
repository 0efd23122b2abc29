"""The SDK worker process of the local runner in multi-processing mode, without start-up noise.

``python -m beam_pipelines.local_worker`` is Beam's ``sdk_worker_main`` (what Beam starts
itself) with one difference made before Beam is imported: the root logger gets a
``NullHandler``. Beam logs ``apitools not found`` through ``logging.warning`` when it is
imported; with no handler on the root logger that call installs a stderr handler
(``logging.basicConfig``), and from then on every record of the worker, down to INFO during
start-up, is printed on the terminal of ``tfrrl prepare`` as well as sent to the runner. With the
``NullHandler`` in place, the worker's records only travel to the runner's logging service,
which logs them in the main process under ``apache_beam.runners.portability.local_job_service``
(shown or not by the main process's logging configuration), and the worker's own level is the
pipeline's ``--default_sdk_harness_log_level`` (``beam_pipelines/runner.py``). TensorFlow's C++
info lines are kept off unless the environment asks for them.

``beam_pipelines/runner.py`` starts workers this way unless the run is verbose.
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    logging.getLogger().addHandler(logging.NullHandler())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from apache_beam.runners.worker import sdk_worker_main  # pylint: disable=C0415

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
