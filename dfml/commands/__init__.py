"""The ``dfml`` subcommands, one ``cmd_*`` function each (``args`` -> exit status); :mod:`dfml.cli`
parses the command line and dispatches to them.

* :mod:`.pool`: ``pool build``, ``pool import``, ``pool merge``, ``pool info`` and ``invert``.
* :mod:`.runs`: ``train``, ``eval``, ``compare``, ``export``, ``plot`` and ``demo``.
* :mod:`.common`: what several commands share (progress bars, ``--data-opt``, one-process commands).
"""
