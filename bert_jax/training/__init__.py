"""The pretraining loop and what it needs: the loop (``loop``), its jitted steps
(``step``), the train state (``state``), optimizers and schedules (``optim``), stopping
cleanly on a signal (``preemption``) and non-finite steps (``finite_guard``)."""
