"""Pretraining data: tokenizers, text to packed ArrayRecord shards, batches.

`preprocess` (run as `python -m electra_jax.preprocess`) reads text
(`text_sources`), tokenizes it (`tokenization`), packs it (`packing`) and
writes records (`records`, the one place the on-disk format is defined);
`input_pipeline` reads them back as per-process batches, and `metadata.json`
as a `spec.DataSpec`.
"""
