"""Offline data jobs: the embedded sample corpus and the sentencepiece vocabulary."""
