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
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),  # the stacked-block axis of a scanned DiT: every device holds every layer's shard
    ("conv_in", None),
)

# The VAE's parameter names (vidgen/models/vae.py: DHWIO_AXES, HWIO_AXES, CHANNEL_AXES):
#   conv_out  the output-channel axis (O) of a conv kernel (DHWIO / HWIO)
#   conv_in   the input-channel axis (I) of a conv kernel
#   channels  a per-channel vector: conv bias, RMSNorm gamma / bias (tiny: replicated)
# Kernels split their output channels over fsdp; where fsdp does not divide them (a head conv with 3 output
# channels, z_dim=16 on fsdp=32) `parallel.sharding.logical_shardings` skips that rule and the input channels take
# fsdp instead, and a kernel that neither divides is replicated. Rules are in order of precedence and each mesh
# axis splits one dimension, so plain flax resolution (nn.logical_to_mesh_sharding) always picks conv_out: derive
# shardings with logical_shardings, which jit can always use.
VAE_RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("conv_out", "fsdp"),
    ("conv_in", "fsdp"),
    ("channels", None),
)

