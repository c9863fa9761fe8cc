// The per-sample kernel value w_b[m, c, t] as the convolution reads it, shared by the CUDA kernels and the CPU
// twins: built from the weight bank on load, in either orientation (forward, or transposed for the input
// gradient), plus the 'same'-padding tap arithmetic and the demodulation coefficient.
#pragma once

#include "mcnet_rt/detail/host_device.h"
#include "mcnet_rt/modulated_conv.h"

namespace mcnet_rt {
namespace detail {

constexpr int kTaps = 9;

// Per-sample views of the optional inputs (null when absent).
template <typename A>
struct SampleParams {
  const A* mix;        // (experts)
  const A* in_scale;   // (Cin)
  const A* out_scale;  // (Cout)
  const A* bias;       // (Cout)
};

template <typename A>
MCNET_HD SampleParams<A> sample_params(const PerSampleConvShape& s, long long b, const A* mix, const A* in_scale,
                                       const A* out_scale, const A* bias) {
  return {mix ? mix + b * s.experts : nullptr, in_scale ? in_scale + b * s.in_channels : nullptr,
          out_scale ? out_scale + b * s.out_channels : nullptr, bias ? bias + b * s.out_channels : nullptr};
}

// Channels of the convolution actually run: (rows m of the kernel, columns c it reduces over).
MCNET_HD int conv_out_channels(const PerSampleConvShape& s, bool transposed) {
  return transposed ? s.in_channels : s.out_channels;
}
MCNET_HD int conv_in_channels(const PerSampleConvShape& s, bool transposed) {
  return transposed ? s.out_channels : s.in_channels;
}

// w_b[m, c, t] of the convolution run: the forward kernel w_b[o=m, i=c, t], or, transposed, w_b[o=c, i=m, 8-t]
// (the input gradient of a 'same' 3×3 conv is a 'same' conv with flipped taps).
template <typename T, typename A>
MCNET_HD A kernel_value(const PerSampleConvShape& s, bool transposed, const T* weight, const SampleParams<A>& p,
                        int m, int c, int t) {
  const int o = transposed ? c : m;
  const int i = transposed ? m : c;
  const int tap = transposed ? kTaps - 1 - t : t;
  const long long bank = static_cast<long long>(s.out_channels) * s.in_channels * kTaps;
  const T* w = weight + (static_cast<long long>(o) * s.in_channels + i) * kTaps + tap;
  A value;
  if (p.mix) {
    value = A(0);
    for (int k = 0; k < s.experts; ++k) value += p.mix[k] * static_cast<A>(w[k * bank]);
  } else {
    value = static_cast<A>(w[0]);
  }
  if (p.in_scale) value *= p.in_scale[i];
  if (p.out_scale) value *= p.out_scale[o];
  return value;
}

// Source row (or column) of tap offset `t` (0..2) for output row `y`; outside [0, size) reads zero padding.
MCNET_HD int tap_source(int y, int t) { return y + t - 1; }

}  // namespace detail
}  // namespace mcnet_rt
