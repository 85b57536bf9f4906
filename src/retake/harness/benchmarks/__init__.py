"""One module per benchmark: its local layout, its loader(s), the command that makes the
layout and what its ``scripts/prepare_<benchmark>.py`` does with the official download.

- :mod:`.videomme` (``videomme``, ``videomme_long``), :mod:`.mlvu` (``mlvu_dev``,
  ``mlvu_test``), :mod:`.longvideobench` (``longvideobench_val``), :mod:`.lvbench`
  (``lvbench``): the official benchmarks.
- :mod:`.synthetic` (``synthetic``, and tiny copies of every layout for the tests) and
  :mod:`.needle` (``needle``): generated benchmarks, written on first use.
- :mod:`.common`: the readers and checks they share, and the prepare scripts' helpers.
- :mod:`.prepare`: the one skeleton of every prepare script (options, errors, report).

The registry (``name -> DatasetSpec``) is :mod:`retake.harness.datasets`. This package's
``__init__`` imports nothing, so that a benchmark module never pulls in the registry.
"""
