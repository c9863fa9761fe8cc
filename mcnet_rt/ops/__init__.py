"""Op families with one home each: a pure-PyTorch reference (the oracle and the fallback) and the models' entry
point, where the fused kernels plug in."""
from .memory_attention import memory_attention, memory_attention_reference
from .modulated_conv import dynamic_conv2d, dynamic_conv2d_reference, modulated_conv2d, modulated_conv2d_reference
from .warp import sparse_warp, sparse_warp_reference, warp_features, warp_features_reference

__all__ = ["memory_attention", "memory_attention_reference", "dynamic_conv2d", "dynamic_conv2d_reference",
           "modulated_conv2d", "modulated_conv2d_reference", "sparse_warp", "sparse_warp_reference",
           "warp_features", "warp_features_reference"]
