"""What every benchmark script shares; each script answers one question (see ``benchmarks/README.md``).

* :mod:`harness.timing`: device synchronisation, timed and memory-measured calls, interleaved
  rounds (an untimed warm-up, the order reversed every other round), medians, and the share of
  the CPUs other processes used meanwhile;
* :mod:`harness.environment`: the record of where and on what a run was taken (hardware,
  package versions, a hash of the measured sources, load average);
* :mod:`harness.workload`: the models (random weights, released architectures), images and prompts;
* :mod:`harness.peers`: the ways of scoring compared: this package's ``ClipScore``,
  torchmetrics' ``CLIPScore`` through its adapter, the per-image pattern, the bare image tower;
* :mod:`harness.report`: the command-line options every script has, markdown tables, targets,
  and writing the JSON and markdown reports.

Scripts import it as a sibling: ``python benchmarks/<script>.py`` puts ``benchmarks/`` first on
the import path.
"""
