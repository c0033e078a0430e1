"""The logical axis vocabulary and its mapping onto mesh axes.

Parameters and activations name their axes logically (batch, length, embed, mlp, heads, ...); one
rule table per model maps those names to mesh axes, so a new mesh never touches model code.
"""
from __future__ import annotations


# Logical name -> mesh axis (or axes). Unlisted names are replicated.
DIT_RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "context"),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),  # the stacked-block axis of a scanned DiT: every device holds every layer's shard
    ("conv_in", None),
)
VAE_RULES = (
    ("activation_batch", ("data", "fsdp")),
)

