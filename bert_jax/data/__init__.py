"""Input data: sentencepiece tokenizer, document sources and the grain pipeline."""
