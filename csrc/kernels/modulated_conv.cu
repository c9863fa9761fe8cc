// Per-sample 3×3 convolutions as implicit GEMMs whose operands are built on load: the kernel operand applies the
// expert mix / modulation / demodulation of kernel_value() as it is staged in shared memory, the image operand
// gathers the 'same'-padded taps. One tiled GEMM body serves the forward conv, its transpose (input gradient)
// and the per-sample weight gradient; they differ only in their operand loaders. float runs on the FMA units,
// half and bfloat16 on tensor cores (float accumulation in both; bfloat16 on sm_75 on the FMA units).
#include <mma.h>

#include <algorithm>
#include <type_traits>

#include "cuda_types.cuh"
#include "mcnet_rt/detail/modulated_conv_math.h"

namespace mcnet_rt {
namespace {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256;

// The block's 64 × 64 tile of C in registers. float: plain FMAs, 16 × 16 threads each holding a 4 × 4 block
// strided by 16 (conflict-free shared-memory reads). half / bfloat16: tensor cores (WMMA 16×16×16, float
// accumulation), 8 warps as 4 (rows) × 2 (columns), each holding a 16 × 32 block in two fragments.
template <typename S>
struct SimtAccumulator {
  static constexpr int kPad = 1;
  static constexpr int kPer = 4;
  float acc[kPer][kPer] = {};

  __device__ void multiply(const S (*a)[kTileM + kPad], const S (*b)[kTileN + kPad]) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float av[kPer], bv[kPer];
#pragma unroll
      for (int r = 0; r < kPer; ++r) av[r] = a[kk][ty + 16 * r];
#pragma unroll
      for (int c = 0; c < kPer; ++c) bv[c] = b[kk][tx + 16 * c];
#pragma unroll
      for (int r = 0; r < kPer; ++r)
#pragma unroll
        for (int c = 0; c < kPer; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }
  }

  template <typename Store>
  __device__ void store(int m0, int n0, int M, int N, const Store& out) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int r = 0; r < kPer; ++r)
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int m = m0 + ty + 16 * r, n = n0 + tx + 16 * c;
        if (m < M && n < N) out(m, n, acc[r][c]);
      }
  }
};

template <typename S>
struct TensorCoreAccumulator {
  static constexpr int kPad = 8;  // WMMA wants a leading dimension that is a multiple of 8 16-bit elements
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[2];

  __device__ TensorCoreAccumulator() {
    nvcuda::wmma::fill_fragment(acc[0], 0.f);
    nvcuda::wmma::fill_fragment(acc[1], 0.f);
  }
  __device__ static int row0() { return (threadIdx.x / 32) % 4 * 16; }
  __device__ static int col0() { return (threadIdx.x / 32) / 4 * 32; }

  // a is staged k-major (a[k][m]), i.e. the 16 × 16 block of A is column-major with leading dimension 64 + pad.
  __device__ void multiply(const S (*a)[kTileM + kPad], const S (*b)[kTileN + kPad]) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, S, nvcuda::wmma::col_major> a_frag;
    nvcuda::wmma::load_matrix_sync(a_frag, &a[0][row0()], kTileM + kPad);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, S, nvcuda::wmma::row_major> b_frag;
      nvcuda::wmma::load_matrix_sync(b_frag, &b[0][col0() + 16 * j], kTileN + kPad);
      nvcuda::wmma::mma_sync(acc[j], a_frag, b_frag, acc[j]);
    }
  }

  // Fragments have no documented element layout: they go through shared memory to reach (m, n).
  template <typename Store>
  __device__ void store(int m0, int n0, int M, int N, const Store& out) {
    __shared__ __align__(32) float c_tile[kTileM][kTileN + 4];
#pragma unroll
    for (int j = 0; j < 2; ++j)
      nvcuda::wmma::store_matrix_sync(&c_tile[row0()][col0() + 16 * j], acc[j], kTileN + 4,
                                      nvcuda::wmma::mem_row_major);
    __syncthreads();
    for (int e = threadIdx.x; e < kTileM * kTileN; e += kThreads) {
      const int m = m0 + e / kTileN, n = n0 + e % kTileN;
      if (m < M && n < N) out(m, n, c_tile[e / kTileN][e % kTileN]);
    }
  }
};

// Tensor cores where the architecture being compiled has them for S (bfloat16 on sm_75 runs the FMA tile).
template <typename S>
using Accumulator = std::conditional_t<has_tensor_cores<S>(), TensorCoreAccumulator<S>, SimtAccumulator<S>>;

// C[m, n] = Σ_k A(m, k) · B(k, n) over the block's 64 × 64 tile of C, then store(m, n, C[m, n]); operands are
// staged in shared memory as S (the kernel's element type: float runs FMAs, half / bfloat16 tensor cores).
// Loaders return float and are only called inside [0, M) × [0, K) and [0, K) × [0, N); kFastest says which index
// walks contiguous memory, so consecutive threads load consecutive addresses. The next k-slice is fetched into
// registers while the current one is multiplied, hiding the global loads behind the math.
template <typename S, typename ALoad, typename BLoad, typename Store>
__device__ void gemm_tile(int M, int N, int K, const ALoad& a, const BLoad& b, const Store& store) {
  using Acc = Accumulator<S>;
  constexpr int kLoadsA = kTileK * kTileM / kThreads;
  constexpr int kLoadsB = kTileK * kTileN / kThreads;
  __shared__ __align__(32) S a_tile[kTileK][kTileM + Acc::kPad];
  __shared__ __align__(32) S b_tile[kTileK][kTileN + Acc::kPad];
  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  // (k, m) and (k, n) offsets within the tile of this thread's j-th load.
  const auto a_k = [&](int j) { const int e = tid + j * kThreads; return ALoad::kFastest ? e % kTileK : e / kTileM; };
  const auto a_m = [&](int j) { const int e = tid + j * kThreads; return ALoad::kFastest ? e / kTileK : e % kTileM; };
  const auto b_k = [&](int j) { const int e = tid + j * kThreads; return BLoad::kFastest ? e % kTileK : e / kTileN; };
  const auto b_n = [&](int j) { const int e = tid + j * kThreads; return BLoad::kFastest ? e / kTileK : e % kTileN; };
  float a_next[kLoadsA], b_next[kLoadsB];
  const auto fetch = [&](int k0) {
#pragma unroll
    for (int j = 0; j < kLoadsA; ++j) {
      const int m = m0 + a_m(j), k = k0 + a_k(j);
      a_next[j] = (m < M && k < K) ? a(m, k) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kLoadsB; ++j) {
      const int n = n0 + b_n(j), k = k0 + b_k(j);
      b_next[j] = (n < N && k < K) ? b(k, n) : 0.f;
    }
  };
  Acc acc;
  fetch(0);
  for (int k0 = 0; k0 < K; k0 += kTileK) {
#pragma unroll
    for (int j = 0; j < kLoadsA; ++j) a_tile[a_k(j)][a_m(j)] = static_cast<S>(a_next[j]);
#pragma unroll
    for (int j = 0; j < kLoadsB; ++j) b_tile[b_k(j)][b_n(j)] = static_cast<S>(b_next[j]);
    __syncthreads();
    if (k0 + kTileK < K) fetch(k0 + kTileK);
    acc.multiply(a_tile, b_tile);
    __syncthreads();
  }
  acc.store(m0, n0, M, N, store);
}

// Kernel operand of the conv: A(m, k = c·9 + t) = w_b[m, c, t].
template <typename T>
struct KernelLoad {
  static constexpr bool kFastest = true;
  PerSampleConvShape s;
  bool transposed;
  const T* weight;
  detail::SampleParams<float> p;
  __device__ float operator()(int m, int k) const {
    return detail::kernel_value(s, transposed, weight, p, m, k / detail::kTaps, k % detail::kTaps);
  }
};

// Image operand: B(k = c·9 + t, n = y·W + x) = image[c, y + ty - 1, x + tx - 1], zero outside.
template <typename T>
struct PatchLoad {
  static constexpr bool kFastest = false;
  const T* image;  // (channels, H, W) of this sample
  int height, width;
  __device__ float operator()(int k, int n) const {
    const int c = k / detail::kTaps, t = k % detail::kTaps;
    const int y = detail::tap_source(n / width, t / 3), x = detail::tap_source(n % width, t % 3);
    if (y < 0 || y >= height || x < 0 || x >= width) return 0.f;
    return static_cast<float>(image[(static_cast<long long>(c) * height + y) * width + x]);
  }
};

template <typename T>
__global__ void conv_kernel(PerSampleConvShape s, bool transposed, int b0, const T* __restrict__ x,
                            const T* __restrict__ weight, const float* __restrict__ mix,
                            const float* __restrict__ in_scale, const float* __restrict__ out_scale,
                            const float* __restrict__ bias, T* __restrict__ out) {
  const int b = b0 + blockIdx.z;
  const int rows = detail::conv_out_channels(s, transposed), cols = detail::conv_in_channels(s, transposed);
  const int pixels = s.height * s.width;
  const auto p = detail::sample_params(s, b, mix, in_scale, out_scale, bias);
  T* sample_out = out + static_cast<long long>(b) * rows * pixels;
  gemm_tile<T>(rows, pixels, cols * detail::kTaps, KernelLoad<T>{s, transposed, weight, p},
               PatchLoad<T>{x + b * s.x_batch_stride, s.height, s.width}, [&](int m, int n, float value) {
                 const float biased = p.bias ? value + p.bias[m] : value;
                 sample_out[static_cast<long long>(m) * pixels + n] = static_cast<T>(biased);
               });
}

// Gradient operand of the weight gradient: A(o, k = pixel) = grad_out[o, pixel].
template <typename T>
struct RowLoad {
  static constexpr bool kFastest = true;
  const T* rows;  // (Cout, H·W) of this sample
  int pixels;
  __device__ float operator()(int o, int k) const {
    return static_cast<float>(rows[static_cast<long long>(o) * pixels + k]);
  }
};

// Image operand of the weight gradient: B(k = pixel, n = i·9 + t) = the patch operand, transposed.
template <typename T>
struct PatchColumnLoad {
  static constexpr bool kFastest = true;
  PatchLoad<T> patch;
  __device__ float operator()(int k, int n) const { return patch(n, k); }
};

template <typename T>
__global__ void weight_grad_kernel(PerSampleConvShape s, int b0, const T* __restrict__ x,
                                   const T* __restrict__ grad_out, float* __restrict__ grad_weight) {
  const int b = b0 + blockIdx.z;
  const int pixels = s.height * s.width;
  const int cols = s.in_channels * detail::kTaps;
  float* sample_grad = grad_weight + static_cast<long long>(b) * s.out_channels * cols;
  gemm_tile<T>(s.out_channels, cols, pixels,
               RowLoad<T>{grad_out + static_cast<long long>(b) * s.out_channels * pixels, pixels},
               PatchColumnLoad<T>{PatchLoad<T>{x + b * s.x_batch_stride, s.height, s.width}},
               [&](int o, int n, float value) { sample_grad[static_cast<long long>(o) * cols + n] = value; });
}

__device__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// One warp per (b, o).
template <typename T>
__global__ void demod_forward_kernel(DemodulationShape s, const T* __restrict__ weight,
                                     const float* __restrict__ styles, float eps, float* __restrict__ demod) {
  const long long warp = (blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= static_cast<long long>(s.batch) * s.out_channels) return;
  const int b = static_cast<int>(warp / s.out_channels), o = static_cast<int>(warp % s.out_channels);
  const T* w = weight + static_cast<long long>(o) * s.in_channels * s.taps;
  float sum = 0.f;
  for (int e = lane; e < s.in_channels * s.taps; e += 32) {
    const float v = static_cast<float>(w[e]) * styles[b * s.in_channels + e / s.taps];
    sum = fmaf(v, v, sum);
  }
  sum = warp_sum(sum);
  if (lane == 0) demod[warp] = rsqrtf(sum + eps);
}

__device__ float demod_chain(const float* demod, const float* grad_demod, long long n) {
  const float d = demod[n];
  return -grad_demod[n] * d * d * d;
}

// One thread per (o, i): grad_weight[o, i, :] = Σ_b g[b, o] · styles[b, i]² · weight[o, i, :].
template <typename T>
__global__ void demod_weight_grad_kernel(DemodulationShape s, const T* __restrict__ weight,
                                         const float* __restrict__ styles, const float* __restrict__ demod,
                                         const float* __restrict__ grad_demod, float* __restrict__ grad_weight) {
  const long long total = static_cast<long long>(s.out_channels) * s.in_channels;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int o = static_cast<int>(e / s.in_channels), i = static_cast<int>(e % s.in_channels);
    float coeff = 0.f;
    for (int b = 0; b < s.batch; ++b) {
      const float st = styles[b * s.in_channels + i];
      coeff = fmaf(demod_chain(demod, grad_demod, static_cast<long long>(b) * s.out_channels + o), st * st, coeff);
    }
    for (int t = 0; t < s.taps; ++t) grad_weight[e * s.taps + t] = coeff * static_cast<float>(weight[e * s.taps + t]);
  }
}

// One thread per (b, i): grad_styles[b, i] = styles[b, i] · Σ_o g[b, o] · Σ_t weight[o, i, t]².
template <typename T>
__global__ void demod_styles_grad_kernel(DemodulationShape s, const T* __restrict__ weight,
                                         const float* __restrict__ styles, const float* __restrict__ demod,
                                         const float* __restrict__ grad_demod, float* __restrict__ grad_styles) {
  const long long total = static_cast<long long>(s.batch) * s.in_channels;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int b = static_cast<int>(e / s.in_channels), i = static_cast<int>(e % s.in_channels);
    float sum = 0.f;
    for (int o = 0; o < s.out_channels; ++o) {
      const T* w = weight + (static_cast<long long>(o) * s.in_channels + i) * s.taps;
      float q = 0.f;
      for (int t = 0; t < s.taps; ++t) q = fmaf(static_cast<float>(w[t]), static_cast<float>(w[t]), q);
      sum = fmaf(demod_chain(demod, grad_demod, static_cast<long long>(b) * s.out_channels + o), q, sum);
    }
    grad_styles[e] = sum * styles[e];
  }
}

// gridDim.z is at most 65535: the batch is launched in slices of that many samples, the first at b0.
constexpr int kMaxGridZ = 65535;

template <typename Launch>
int for_batch_slices(int batch, const Launch& launch) {
  for (int b0 = 0; b0 < batch; b0 += kMaxGridZ) {
    launch(b0, std::min(kMaxGridZ, batch - b0));
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return static_cast<int>(status);
  }
  return 0;
}

dim3 gemm_grid(int m, int n, int samples) {
  return dim3((n + kTileN - 1) / kTileN, (m + kTileM - 1) / kTileM, samples);
}

}  // namespace

int persample_conv2d_cuda(DType dtype, const PerSampleConvShape& s, bool transposed, const void* x,
                          const void* weight, const void* mix, const void* in_scale, const void* out_scale,
                          const void* bias, void* out, Stream stream) {
  const int rows = detail::conv_out_channels(s, transposed);
  if (static_cast<long long>(s.batch) * rows * s.height * s.width == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return for_batch_slices(s.batch, [&](int b0, int samples) {
      conv_kernel<T><<<gemm_grid(rows, s.height * s.width, samples), kThreads, 0,
                       static_cast<cudaStream_t>(stream)>>>(
          s, transposed, b0, static_cast<const T*>(x), static_cast<const T*>(weight),
          static_cast<const float*>(mix), static_cast<const float*>(in_scale), static_cast<const float*>(out_scale),
          static_cast<const float*>(bias), static_cast<T*>(out));
    });
  });
}

int persample_conv2d_weight_grad_cuda(DType dtype, const PerSampleConvShape& s, const void* x,
                                      const void* grad_out, void* grad_weight, Stream stream) {
  if (static_cast<long long>(s.batch) * s.out_channels * s.in_channels == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return for_batch_slices(s.batch, [&](int b0, int samples) {
      weight_grad_kernel<T><<<gemm_grid(s.out_channels, s.in_channels * detail::kTaps, samples), kThreads, 0,
                              static_cast<cudaStream_t>(stream)>>>(
          s, b0, static_cast<const T*>(x), static_cast<const T*>(grad_out), static_cast<float*>(grad_weight));
    });
  });
}

int demodulation_forward_cuda(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                              double eps, void* demod, Stream stream) {
  const long long warps = static_cast<long long>(s.batch) * s.out_channels;
  if (warps == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    demod_forward_kernel<T><<<static_cast<int>((warps * 32 + kThreads - 1) / kThreads), kThreads, 0,
                              static_cast<cudaStream_t>(stream)>>>(
        s, static_cast<const T*>(weight), static_cast<const float*>(styles), static_cast<float>(eps),
        static_cast<float*>(demod));
    return static_cast<int>(cudaGetLastError());
  });
}

int demodulation_backward_cuda(DType dtype, const DemodulationShape& s, const void* weight, const void* styles,
                               const void* demod, const void* grad_demod, void* grad_weight, void* grad_styles,
                               Stream stream) {
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto cuda_stream = static_cast<cudaStream_t>(stream);
    const auto w = static_cast<const T*>(weight);
    const auto st = static_cast<const float*>(styles);
    const auto d = static_cast<const float*>(demod);
    const auto gd = static_cast<const float*>(grad_demod);
    const long long weights = static_cast<long long>(s.out_channels) * s.in_channels;
    if (grad_weight && weights > 0)
      demod_weight_grad_kernel<T><<<blocks_for(weights, kThreads), kThreads, 0, cuda_stream>>>(
          s, w, st, d, gd, static_cast<float*>(grad_weight));
    const long long styles_count = static_cast<long long>(s.batch) * s.in_channels;
    if (grad_styles && styles_count > 0)
      demod_styles_grad_kernel<T><<<blocks_for(styles_count, kThreads), kThreads, 0, cuda_stream>>>(
          s, w, st, d, gd, static_cast<float*>(grad_styles));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mcnet_rt
