"""Research toolkit: datasets, probes and the per-augmentation report.

Tools to *measure* what a model learned, used by the examples, experiments and tests; the
core package (augment, heads, losses, branch, ...) never imports them.

- :mod:`~equimod_plugin.eval.datasets`: the shipped Fashion-MNIST sample (or the full set),
  and colour tinting for hue tasks.
- :mod:`~equimod_plugin.eval.probes`: feature extraction, linear probe, kNN, eta squared,
  ROC AUC.
- :mod:`~equimod_plugin.eval.batchnorm`: precise BatchNorm statistics before evaluating in
  eval mode.
- :mod:`~equimod_plugin.eval.report`: how far each augmentation field moves an encoder's
  embedding, and how much of the move a trained head or steering operator predicts.
"""
