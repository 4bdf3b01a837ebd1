"""The training engine: the loop over a population and the hooks it calls, stacking, the
stacked optimizers."""
