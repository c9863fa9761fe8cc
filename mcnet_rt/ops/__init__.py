"""Op families with one home each: a pure-PyTorch reference (the oracle and the fallback), the fused kernel as a
torch op defined in C++ (`mcnet_rt/_ops.so`, loaded here) with its fake implementation and autograd, and the models'
entry point that picks between them (`impl`, `use_impl`, `MCNET_RT_OPS`; see `dispatch`)."""
from ._native import use_impl
from .dispatch import cuda_kernels_available, missing_kernel
from .memory_attention import memory_attention, memory_attention_reference
from .modulated_conv import dynamic_conv2d, dynamic_conv2d_reference, modulated_conv2d, modulated_conv2d_reference
from .warp import sparse_warp, sparse_warp_reference, warp_features, warp_features_reference

__all__ = ["cuda_kernels_available", "missing_kernel", "use_impl", "memory_attention", "memory_attention_reference",
           "dynamic_conv2d", "dynamic_conv2d_reference",
           "modulated_conv2d", "modulated_conv2d_reference", "sparse_warp", "sparse_warp_reference",
           "warp_features", "warp_features_reference"]
