// Modulated-conv op family: a 3×3 'same' convolution with a different kernel per sample, built on load from a
// shared weight bank, and never stored. It covers both per-sample convolutions of the memory:
//   StyleGAN2 modulated conv (experts = 1, no mix):  w_b[o,i,t] = W[o,i,t] · in_scale[b,i] · out_scale[b,o]
//     with in_scale = styles and out_scale = the demodulation d[b,o] = rsqrt(Σ_{i,t} (W[o,i,t]·styles[b,i])² + eps);
//   expert-mixture dynamic conv (no scales):          w_b[o,i,t] = Σ_k mix[b,k] · W[k,o,i,t]
//     plus a per-sample bias[b,o].
// Then out[b,o,y,x] = Σ_{i,ty,tx} w_b[o,i,ty,tx] · x[b,i,y+ty-1,x+tx-1] (+ bias[b,o]), zero padding, t = 3·ty+tx.
//
// Layouts (all contiguous, row-major): weight (experts, Cout, Cin, 3, 3) and x/out/grad_out of `dtype`; mix
// (B, experts), in_scale (B, Cin), out_scale (B, Cout), bias (B, Cout), demodulation and every gradient in float32
// (float64 for the Float64 CPU twin). x may be shared by the whole batch (x_batch_stride = 0, the expanded memory).
// Optional inputs are null pointers: no mix means experts = 1 with weight 1, no scale means 1, no bias means 0.
#pragma once

#include "mcnet_rt/common.h"

namespace mcnet_rt {

struct PerSampleConvShape {
  int batch;
  int in_channels;   // Cin of the forward convolution
  int out_channels;  // Cout of the forward convolution
  int height, width;
  int experts;       // leading dimension of the weight bank (1 without mix)
  long long x_batch_stride;  // elements between samples of the convolution's input (0: one input for all)
};

// transposed = false: out (B, Cout, H, W) = conv(x (B, Cin, H, W), w_b) + bias.
// transposed = true: the gradient of that conv with respect to its input, out (B, Cin, H, W) =
//   conv_transpose(x (B, Cout, H, W), w_b), i.e. the same conv with the 3×3 taps flipped and the channel roles
//   swapped; bias must be null and x_batch_stride refers to this x.
int persample_conv2d_cuda(DType dtype, const PerSampleConvShape& s, bool transposed, const void* x,
                          const void* weight, const void* mix, const void* in_scale, const void* out_scale,
                          const void* bias, void* out, Stream stream);
int persample_conv2d_cpu(DType dtype, const PerSampleConvShape& s, bool transposed, const void* x,
                         const void* weight, const void* mix, const void* in_scale, const void* out_scale,
                         const void* bias, void* out);

// Gradient of the loss with respect to each sample's effective kernel:
//   grad_weight[b,o,i,ty,tx] = Σ_{y,x} grad_out[b,o,y,x] · x[b,i,y+ty-1,x+tx-1]   (B, Cout, Cin, 3, 3), float.
// The chain rule to the weight bank, scales and mix is a few small tensor ops on the caller's side.
int persample_conv2d_weight_grad_cuda(DType dtype, const PerSampleConvShape& s, const void* x,
                                      const void* grad_out, void* grad_weight, Stream stream);
int persample_conv2d_weight_grad_cpu(DType dtype, const PerSampleConvShape& s, const void* x,
                                     const void* grad_out, void* grad_weight);

// StyleGAN2 demodulation d[b,o] = rsqrt(Σ_{i,t} (weight[o,i,t] · styles[b,i])² + eps) for weight (Cout, Cin, taps)
// of `dtype` and styles (B, Cin) float; d (B, Cout) float.
struct DemodulationShape {
  int batch, in_channels, out_channels, taps;
};
int demodulation_forward_cuda(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                              double eps, void* demod, Stream stream);
int demodulation_forward_cpu(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                             double eps, void* demod);

// With g[b,o] = -grad_demod[b,o] · demod[b,o]³ (the derivative of rsqrt, times 2 for the square):
//   grad_styles[b,i]   = Σ_o g[b,o] · styles[b,i] · Σ_t weight[o,i,t]²
//   grad_weight[o,i,t] = Σ_b g[b,o] · styles[b,i]² · weight[o,i,t]
// Both float, written (not accumulated); either may be null when not needed.
int demodulation_backward_cuda(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                               const void* demod, const void* grad_demod, void* grad_weight, void* grad_styles,
                               Stream stream);
int demodulation_backward_cpu(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                              const void* demod, const void* grad_demod, void* grad_weight, void* grad_styles);

}  // namespace mcnet_rt
