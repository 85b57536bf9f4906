"""The parts of ``scripts/bench.py`` (``make bench``): one module per suite and what they share.

- ``common``: the repository root, the random bench checkpoint and video, device sync, the
  machine description, the long H.264 test video and shared table helpers;
- ``engine``, ``memory``, ``input``, ``throughput``, ``gpu``: each suite's measurement
  (``suite_<name>(args) -> dict``) and its Markdown table (``table_<name>(result) -> str``);
- ``fullsize``: Qwen2.5-VL-7B's architecture with random weights (the gpu suite's model);
- ``flops``: a method wrapper that times and records what each chunk kept, and the prefill
  FLOP count from it (the gpu suite's FLOP floor).

``scripts/bench.py`` holds the command line and the report; these modules are imported from
there (and by ``tests/test_bench.py``), not by the ``retake`` package.
"""
