// CPU twin of kernels/modulated_conv.cu, in float32 or float64: the same per-sample kernel values
// (detail::kernel_value) and the same products, blocked for a CPU's registers and caches instead of a GPU's
// tiles. Output tiles run in parallel under OpenMP, each writing only its own outputs (deterministic).
#include <algorithm>
#include <cmath>
#include <vector>

#include "mcnet_rt/detail/modulated_conv_math.h"

namespace mcnet_rt {
namespace {

constexpr int kOutTile = 8;
constexpr int kChannelChunk = 16;
constexpr int kPixelStrip = 8;
// Below this many multiply-adds a call runs on one thread: waking the pool costs more than it saves.
constexpr long long kParallelWork = 1 << 20;

long long conv_work(const PerSampleConvShape& s) {
  return static_cast<long long>(s.batch) * s.in_channels * s.out_channels * s.height * s.width * detail::kTaps;
}

template <typename F>
int dispatch_cpu_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(float{}); return 0;
    case DType::Float64: f(double{}); return 0;
    default: return kUnsupported;
  }
}

// First and one-past-last output column whose tap `t` (0..2) reads inside [0, size).
inline int tap_begin(int t) { return std::max(0, 1 - t); }
inline int tap_end(int t, int size) { return std::min(size, size + 1 - t); }

// The conv's input with a zero border (one row above and below, one column left and at least one right, rows
// padded to whole kPixelStrip strips), so that the micro-kernel reads every tap without bounds checks.
template <typename A>
struct PaddedInput {
  int channels, rows, stride;  // stride: elements per padded row
  std::vector<A> data;

  PaddedInput(const A* x, int channels, int h, int w)
      : channels(channels), rows(h + 2), stride((w + kPixelStrip - 1) / kPixelStrip * kPixelStrip + 2),
        data(static_cast<size_t>(channels) * rows * stride, A(0)) {
    for (int c = 0; c < channels; ++c)
      for (int y = 0; y < h; ++y)
        std::copy(x + (static_cast<long long>(c) * h + y) * w, x + (static_cast<long long>(c) * h + y + 1) * w,
                  data.begin() + (static_cast<long long>(c) * rows + y + 1) * stride + 1);
  }
  // Padded pixel (y, x) of channel c is unpadded (y - 1, x - 1): tap (ty, tx) of output (y, x) is at (y+ty, x+tx).
  const A* at(int c, int y, int x) const { return data.data() + (static_cast<long long>(c) * rows + y) * stride + x; }
};

// Loop order o-tile, output row, strip of kPixelStrip pixels, then input channels in chunks: kOutTile ×
// kPixelStrip sums stay in registers over a chunk's channels and taps and are then added to the output. Summing
// in chunks also keeps float32 as accurate as PyTorch over the model's Cin·9 = 4608-term reductions.
template <typename A>
void conv(const PerSampleConvShape& s, bool transposed, const A* x, const A* weight, const A* mix,
          const A* in_scale, const A* out_scale, const A* bias, A* out) {
  const int rows = detail::conv_out_channels(s, transposed);
  const int cols = detail::conv_in_channels(s, transposed);
  const int h = s.height, w = s.width;
  const long long plane = static_cast<long long>(h) * w;
  const int tiles = (rows + kOutTile - 1) / kOutTile;
  const int inputs = s.x_batch_stride == 0 ? 1 : s.batch;
  std::vector<PaddedInput<A>> padded;
  padded.reserve(inputs);
  for (int b = 0; b < inputs; ++b) padded.emplace_back(x + b * s.x_batch_stride, cols, h, w);
#pragma omp parallel for collapse(2) schedule(static) if (conv_work(s) > kParallelWork)
  for (int b = 0; b < s.batch; ++b) {
    for (int tile = 0; tile < tiles; ++tile) {
      const auto p = detail::sample_params(s, b, mix, in_scale, out_scale, bias);
      const PaddedInput<A>& src = padded[s.x_batch_stride == 0 ? 0 : b];
      const int m0 = tile * kOutTile;
      const int count = std::min(kOutTile, rows - m0);
      A* dst = out + (static_cast<long long>(b) * rows + m0) * plane;
      for (int m = 0; m < count; ++m) std::fill(dst + m * plane, dst + (m + 1) * plane, p.bias ? p.bias[m0 + m] : A(0));
      // kernel[c - c0][t][m] of the chunk; rows past `count` stay zero.
      A kernel[kChannelChunk][detail::kTaps][kOutTile] = {};
      for (int c0 = 0; c0 < cols; c0 += kChannelChunk) {
        const int chunk = std::min(kChannelChunk, cols - c0);
        for (int c = 0; c < chunk; ++c)
          for (int t = 0; t < detail::kTaps; ++t)
            for (int m = 0; m < count; ++m)
              kernel[c][t][m] = detail::kernel_value(s, transposed, weight, p, m0 + m, c0 + c, t);
        for (int y = 0; y < h; ++y)
          for (int x0 = 0; x0 < w; x0 += kPixelStrip) {
            A acc[kOutTile][kPixelStrip] = {};
            for (int c = 0; c < chunk; ++c)
              for (int t = 0; t < detail::kTaps; ++t) {
                const A* in = src.at(c0 + c, y + t / 3, x0 + t % 3);
                for (int m = 0; m < kOutTile; ++m) {
                  const A k = kernel[c][t][m];
                  for (int px = 0; px < kPixelStrip; ++px) acc[m][px] += k * in[px];
                }
              }
            const int strip = std::min(kPixelStrip, w - x0);
            for (int m = 0; m < count; ++m)
              for (int px = 0; px < strip; ++px) dst[m * plane + y * w + x0 + px] += acc[m][px];
          }
      }
    }
  }
}

template <typename A>
void weight_grad(const PerSampleConvShape& s, const A* x, const A* grad_out, A* grad_weight) {
  const int h = s.height, w = s.width;
  const long long plane = static_cast<long long>(h) * w;
#pragma omp parallel for collapse(2) schedule(static) if (conv_work(s) > kParallelWork)
  for (int b = 0; b < s.batch; ++b) {
    for (int o = 0; o < s.out_channels; ++o) {
      std::vector<A> partial(static_cast<size_t>(detail::kTaps) * w);
      const A* go = grad_out + (static_cast<long long>(b) * s.out_channels + o) * plane;
      A* g = grad_weight + (static_cast<long long>(b) * s.out_channels + o) * s.in_channels * detail::kTaps;
      for (int i = 0; i < s.in_channels; ++i) {
        const A* src = x + b * s.x_batch_stride + i * plane;
        std::fill(partial.begin(), partial.end(), A(0));
        for (int t = 0; t < detail::kTaps; ++t) {
          const int ty = t / 3, tx = t % 3;
          const int x0 = tap_begin(tx), x1 = tap_end(tx, w);
          A* acc = partial.data() + t * w;
          for (int y = tap_begin(ty); y < tap_end(ty, h); ++y) {
            const A* row = src + detail::tap_source(y, ty) * w + (tx - 1);
            const A* gorow = go + y * w;
            for (int xo = x0; xo < x1; ++xo) acc[xo] += gorow[xo] * row[xo];
          }
        }
        for (int t = 0; t < detail::kTaps; ++t) {
          A sum = 0;
          for (int xo = 0; xo < w; ++xo) sum += partial[t * w + xo];
          g[i * detail::kTaps + t] = sum;
        }
      }
    }
  }
}

// Sums the squares in 32 interleaved partial sums, then adds those: the CUDA kernel's warp-lane order, and far
// more accurate than one serial float sum over Cin·9 terms.
template <typename A>
void demod_forward(const DemodulationShape& s, const A* weight, const A* styles, A eps, A* demod) {
  constexpr int kLanes = 32;
  for (int b = 0; b < s.batch; ++b)
    for (int o = 0; o < s.out_channels; ++o) {
      const A* w = weight + static_cast<long long>(o) * s.in_channels * s.taps;
      A lanes[kLanes] = {};
      for (int e = 0; e < s.in_channels * s.taps; ++e) {
        const A v = w[e] * styles[b * s.in_channels + e / s.taps];
        lanes[e % kLanes] += v * v;
      }
      A sum = 0;
      for (const A lane : lanes) sum += lane;
      demod[b * s.out_channels + o] = A(1) / std::sqrt(sum + eps);
    }
}

template <typename A>
void demod_backward(const DemodulationShape& s, const A* weight, const A* styles, const A* demod,
                    const A* grad_demod, A* grad_weight, A* grad_styles) {
  std::vector<A> g(static_cast<size_t>(s.batch) * s.out_channels);
  for (size_t n = 0; n < g.size(); ++n) g[n] = -grad_demod[n] * demod[n] * demod[n] * demod[n];
  for (int o = 0; o < s.out_channels; ++o)
    for (int i = 0; i < s.in_channels; ++i) {
      const A* w = weight + (static_cast<long long>(o) * s.in_channels + i) * s.taps;
      if (grad_weight) {
        A coeff = 0;
        for (int b = 0; b < s.batch; ++b) {
          const A st = styles[b * s.in_channels + i];
          coeff += g[b * s.out_channels + o] * st * st;
        }
        A* gw = grad_weight + (static_cast<long long>(o) * s.in_channels + i) * s.taps;
        for (int t = 0; t < s.taps; ++t) gw[t] = coeff * w[t];
      }
    }
  if (grad_styles) {
    for (int b = 0; b < s.batch; ++b)
      for (int i = 0; i < s.in_channels; ++i) {
        A sum = 0;
        for (int o = 0; o < s.out_channels; ++o) {
          const A* w = weight + (static_cast<long long>(o) * s.in_channels + i) * s.taps;
          A q = 0;
          for (int t = 0; t < s.taps; ++t) q += w[t] * w[t];
          sum += g[b * s.out_channels + o] * q;
        }
        grad_styles[b * s.in_channels + i] = sum * styles[b * s.in_channels + i];
      }
  }
}

}  // namespace

int persample_conv2d_cpu(DType dtype, const PerSampleConvShape& s, bool transposed, const void* x,
                         const void* weight, const void* mix, const void* in_scale, const void* out_scale,
                         const void* bias, void* out) {
  return dispatch_cpu_dtype(dtype, [&](auto tag) {
    using A = decltype(tag);
    conv(s, transposed, static_cast<const A*>(x), static_cast<const A*>(weight), static_cast<const A*>(mix),
         static_cast<const A*>(in_scale), static_cast<const A*>(out_scale), static_cast<const A*>(bias),
         static_cast<A*>(out));
  });
}

int persample_conv2d_weight_grad_cpu(DType dtype, const PerSampleConvShape& s, const void* x,
                                     const void* grad_out, void* grad_weight) {
  return dispatch_cpu_dtype(dtype, [&](auto tag) {
    using A = decltype(tag);
    weight_grad(s, static_cast<const A*>(x), static_cast<const A*>(grad_out), static_cast<A*>(grad_weight));
  });
}

int demodulation_forward_cpu(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                             double eps, void* demod) {
  return dispatch_cpu_dtype(dtype, [&](auto tag) {
    using A = decltype(tag);
    demod_forward(s, static_cast<const A*>(weight), static_cast<const A*>(styles), static_cast<A>(eps),
                  static_cast<A*>(demod));
  });
}

int demodulation_backward_cpu(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                              const void* demod, const void* grad_demod, void* grad_weight, void* grad_styles) {
  return dispatch_cpu_dtype(dtype, [&](auto tag) {
    using A = decltype(tag);
    demod_backward(s, static_cast<const A*>(weight), static_cast<const A*>(styles), static_cast<const A*>(demod),
                   static_cast<const A*>(grad_demod), static_cast<A*>(grad_weight), static_cast<A*>(grad_styles));
  });
}

}  // namespace mcnet_rt
