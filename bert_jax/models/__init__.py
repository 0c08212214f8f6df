"""Model definitions: shared Transformer blocks, BERT/ALBERT (and T5)."""
