"""Checkpoints on disk: the only code that knows a workdir's checkpoint layout.

``checkpointer`` saves and restores the train state, the data iterator, the model
config and the data spec as orbax items; ``fingerprint`` says what a checkpoint must
match (model fields, optimizer); ``guard`` turns orbax and OS failures into clear
errors; ``lock`` keeps a workdir to one writing run.
"""
