"""The ``bert-jax`` command line: dispatch (``main``), the commands that are not a
library's job elsewhere (``evaluate``, ``report``) and how a run ends on bad input
(``errors``)."""
