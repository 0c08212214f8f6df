"""``python -m bert_jax COMMAND ...``: the same as the ``bert-jax`` script."""

from bert_jax.cli import run

if __name__ == "__main__":
    run()
