"""What may have disturbed a measurement: a busy host (``host``), other work on the GPU (``device``),
a batch far from its side's others (``outliers``), work a side left queued on the GPU (``drain``),
torch compiling or recording a CUDA graph inside measured batches (``compiles``).

``measure`` asks these around every timed batch and pass; the row and the evaluator's record carry
what they saw (``checks``)."""
