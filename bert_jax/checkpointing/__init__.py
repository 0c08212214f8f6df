"""Checkpoints on disk: the only code that knows a workdir's checkpoint layout.

``checkpointer`` saves and restores the train state, the data iterator, the model
config, the data spec and the run config as orbax items; ``workdir`` names the
checkpoint folder and reads what the latest checkpoint records (model config, run
config); ``inference`` is the params-only restore every reading command uses
(``restore_for_inference``); ``fingerprint`` says what a checkpoint must match (model
fields, optimizer); ``guard`` turns orbax and OS failures into clear errors; ``lock``
keeps a workdir to one writing run.
"""
