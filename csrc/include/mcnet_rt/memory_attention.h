// Memory attention op family: out = softmax(scale · qᵀk) · vᵀ over channel-major maps, flash-style (the
// queries × keys score matrix is never stored).
//
// Layouts (all contiguous): q and out (batch, C, queries), k and v (batch, C, keys), i.e. NCHW feature maps with
// the spatial dimensions flattened; element [b, c, n] sits at b·C·N + c·N + n. For query n of map b:
//   s_j   = scale · Σ_c q[b,c,n] k[b,c,j]
//   lse_n = log2 Σ_j exp(s_j) = log2 Σ_j exp2(s_j·log2e)   (base 2, kept for the backward)
//   out[b,c,n] = Σ_j exp2(s_j·log2e − lse_n) v[b,c,j]
// Backward (flash-attention-2): with P = exp2(s·log2e − lse), dO = grad_out and D_n = Σ_c dO[b,c,n] out[b,c,n],
//   dV[c,j] = Σ_n dO[c,n] P[n,j],   dP[n,j] = Σ_c dO[c,n] v[c,j],   dS = P ∘ (dP − D),
//   dQ[c,n] = scale · Σ_j dS[n,j] k[c,j],   dK[c,j] = scale · Σ_n dS[n,j] q[c,n],
// recomputing P tile by tile in two passes: one over query tiles (dQ), one over key tiles (dK, dV). Each gradient
// element is written by exactly one tile, so both passes are deterministic and need no atomics.
#pragma once

#include "mcnet_rt/common.h"

namespace mcnet_rt {

struct AttentionShape {
  int batch;
  int channels;  // C, the head size (512 in vox-256, 64 in the small preset)
  int queries;   // H·W of the query map
  int keys;      // h·w of the memory (1024 in vox-256)
  float scale;   // softmax scale (0.25 in the released model)
};

// q, k, v, out of `dtype`; lse (batch, queries) float32 (float64 for the Float64 twin).
int memory_attention_forward_cuda(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v,
                                  void* out, void* lse, Stream stream);
int memory_attention_forward_cpu(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v,
                                 void* out, void* lse);

// q, k, v, out, grad_out of `dtype`; lse as produced by the forward. delta (batch, queries) is scratch for D.
// grad_q, grad_k, grad_v, delta are float32 (float64 for the Float64 twin) and are overwritten, not accumulated.
int memory_attention_backward_cuda(DType dtype, const AttentionShape& s, const void* q, const void* k,
                                   const void* v, const void* out, const void* lse, const void* grad_out,
                                   void* delta, void* grad_q, void* grad_k, void* grad_v, Stream stream);
int memory_attention_backward_cpu(DType dtype, const AttentionShape& s, const void* q, const void* k,
                                  const void* v, const void* out, const void* lse, const void* grad_out,
                                  void* delta, void* grad_q, void* grad_k, void* grad_v);

}  // namespace mcnet_rt
