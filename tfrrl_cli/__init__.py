"""The ``tfrrl`` command line: argument parsing only, one module per subcommand.

Each subcommand module holds ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``,
which dispatches to functions of the library (:mod:`tfrrl`) and the apps
(:mod:`beam_pipelines`, :mod:`tfrrl_serving`); :mod:`tfrrl_cli.main` assembles the parser.
"""
