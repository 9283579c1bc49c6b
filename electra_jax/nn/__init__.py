"""Numerics behind the model's modules that exist for speed.

`linear` (dense products and bias adds with backward passes XLA lays out
well), `dropout` (keep masks from packed 16-bit draws) and `stack` (how the
layers of an encoder are applied: one traced layer, unrolled or scanned).
`model.py` holds the architecture; these modules hold how it runs fast.
"""
