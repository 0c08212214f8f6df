"""Model definitions: shared Transformer blocks, BERT/ALBERT (and T5).

``registry`` is what the rest of the code asks about a model (family -> config class,
model class, Hugging Face names, layer layout; ``model_config(run_config)``);
``loading.load_model`` is where weights come from (random, pretrained workdir, Hugging Face).
"""
