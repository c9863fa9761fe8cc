// Flash-style memory attention over channel-major maps (see mcnet_rt/memory_attention.h).
//
// Forward: one block of kThreads owns kQueryTile queries of one map. Their q tile stays in shared memory for the
// whole kernel (q_s[c][i], every channel); keys are streamed kKeyTile at a time, and each key tile's K and V are
// staged in channel chunks (kv_s[j][c], key-major so that K feeds the score product and V the output product
// without a second layout). Per key tile: S = qᵀk (accumulated over channel chunks), online softmax in base 2 on
// S (running max m, running sum l, rescale factor alpha per query), O = alpha·O + P·V with O in registers. The
// queries × keys matrix exists only as one kQueryTile × kKeyTile tile in shared memory.
// fp16/bf16 use tensor cores (WMMA 16×16×16, float accumulators); float, and bf16 on sm_75, use a SIMT tile with
// the same interface.
//
// Backward: D = rowsum(dO ∘ O) first, then one generic kernel run twice (see backward_kernel): rows = queries
// gives dQ, rows = keys gives dK and dV. Both recompute P tile by tile from lse; both are SIMT, float accumulation.
#include <mma.h>

#include <type_traits>
#include <utility>

#include "cuda_types.cuh"
#include "mcnet_rt/detail/memory_attention_math.h"
#include "mcnet_rt/memory_attention.h"

namespace mcnet_rt {
namespace {

using detail::kKeyTile;
using detail::kMaxChannels;
using detail::kQueryTile;
using detail::kRowTile;
using detail::kStreamTile;
namespace wmma = nvcuda::wmma;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__host__ __device__ constexpr int round_up(int x, int m) { return (x + m - 1) / m * m; }
__host__ __device__ constexpr size_t align128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// Channels are padded to a multiple of 16 (one WMMA k-step); padded channels are zero in every staged tile.
__host__ __device__ constexpr int padded_channels(int channels) { return round_up(channels, 16); }

// dst[c·rows + r] = src[c·n + n0 + r] for c < padded, r < rows: a block's resident tile in the global layout.
// Zeros outside the map (c ≥ channels or n0 + r ≥ n).
template <typename T>
__device__ void load_rows(T* dst, const T* __restrict__ src, int channels, int padded, int n, int n0, int rows) {
  const T zero = from_float<T>(0.0f);
  for (int i = threadIdx.x; i < padded * rows; i += blockDim.x) {
    const int c = i / rows;
    const int r = i - c * rows;
    dst[i] = (c < channels && n0 + r < n) ? src[static_cast<long long>(c) * n + n0 + r] : zero;
  }
}

// dst[s·stride + cl] = src[(c0 + cl)·n + n0 + s] for cl < width, s < tile: one channel chunk of a streamed tile,
// transposed to item-major (reads stay coalesced along s). Zeros outside the map.
template <typename T>
__device__ void load_chunk(T* dst, int stride, const T* __restrict__ src, int channels, int n, int n0, int tile,
                           int c0, int width) {
  const T zero = from_float<T>(0.0f);
  for (int i = threadIdx.x; i < width * tile; i += blockDim.x) {
    const int cl = i / tile;
    const int s = i - cl * tile;
    const int c = c0 + cl;
    dst[s * stride + cl] = (c < channels && n0 + s < n) ? src[static_cast<long long>(c) * n + n0 + s] : zero;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward tiles. Both keep the kQueryTile × kKeyTile scores and the kQueryTile × C output accumulator of the block
// in registers, spread over the block's threads, and share this interface:
//   init(scratch)        zero O (the WMMA tile also learns its fragment layout, using scratch)
//   clear_scores()       S = 0
//   scores(q_s, kv_s, c0, width)        S += q_s[c0 + cl][·]ᵀ · K chunk (kv_s[j][cl]) for cl < width
//   store_scores(s_s)    s_s[i][j] = S[i][j]
//   rescale(alpha_s)     O[i][·] *= alpha_s[i]
//   accumulate<ch>(p_s, kv_s, width)    O[i][ch·kChunk + cl] += Σ_j p_s[i][j] · V chunk (kv_s[j][cl])
//   stage<ch>(o_s, width)               o_s[cl][i] = O[i][ch·kChunk + cl]
// kv_s holds kKeyTile rows of kStride elements, one channel chunk of kChunk channels at a time.

template <typename T>
struct SimtForward {
  using Prob = float;
  static constexpr int kChunk = 64;
  static constexpr int kStride = kChunk + 1;  // odd stride: threads reading column-wise hit distinct banks
  static constexpr int kMaxChunks = kMaxChannels / kChunk;
  // Thread (ty, tx) of a 16 × 16 grid owns queries 2·ty + a (a < 2), keys tx + 16·k and chunk channels tx + 16·k
  // (k < 4): 32 × 64 scores and 32 × 64 outputs per chunk over 256 threads.
  static_assert(kQueryTile == 32 && kKeyTile == 64 && kThreads == 256, "thread mapping below");

  float s[2][4];
  float o[kMaxChunks][2][4];

  __device__ int ty() const { return threadIdx.x / 16; }
  __device__ int tx() const { return threadIdx.x % 16; }

  __device__ void init(float*) {
#pragma unroll
    for (int ch = 0; ch < kMaxChunks; ++ch)
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int k = 0; k < 4; ++k) o[ch][a][k] = 0.0f;
  }

  __device__ void clear_scores() {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int k = 0; k < 4; ++k) s[a][k] = 0.0f;
  }

  __device__ void scores(const T* q_s, const T* kv_s, int c0, int width) {
    for (int cl = 0; cl < width; ++cl) {
      const float q0 = to_float(q_s[(c0 + cl) * kQueryTile + 2 * ty()]);
      const float q1 = to_float(q_s[(c0 + cl) * kQueryTile + 2 * ty() + 1]);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float key = to_float(kv_s[(tx() + 16 * k) * kStride + cl]);
        s[0][k] += q0 * key;
        s[1][k] += q1 * key;
      }
    }
  }

  __device__ void store_scores(float* s_s) const {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int k = 0; k < 4; ++k) s_s[(2 * ty() + a) * kKeyTile + tx() + 16 * k] = s[a][k];
  }

  __device__ void rescale(const float* alpha_s) {
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const float alpha = alpha_s[2 * ty() + a];
#pragma unroll
      for (int ch = 0; ch < kMaxChunks; ++ch)
#pragma unroll
        for (int k = 0; k < 4; ++k) o[ch][a][k] *= alpha;
    }
  }

  template <int ch>
  __device__ void accumulate(const Prob* p_s, const T* kv_s, int width) {
    for (int j = 0; j < kKeyTile; ++j) {
      const float p0 = p_s[(2 * ty()) * kKeyTile + j];
      const float p1 = p_s[(2 * ty() + 1) * kKeyTile + j];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int cl = tx() + 16 * k;
        if (cl < width) {
          const float value = to_float(kv_s[j * kStride + cl]);
          o[ch][0][k] += p0 * value;
          o[ch][1][k] += p1 * value;
        }
      }
    }
  }

  template <int ch>
  __device__ void stage(float* o_s, int width) const {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int cl = tx() + 16 * k;
      if (cl < width) {
#pragma unroll
        for (int a = 0; a < 2; ++a) o_s[cl * kQueryTile + 2 * ty() + a] = o[ch][a][k];
      }
    }
  }
};

// Tensor-core tile. Warp w computes the 16 × 16 score fragment (queries 16·(w / 4), keys 16·(w % 4)) and, in every
// channel chunk, the output fragments of chunk channels 16·w for both 16-query halves. Online-softmax rescaling
// needs each accumulator element's query row; WMMA leaves the element → row map unspecified but fixed per
// fragment type, so init() reads it once by loading a matrix whose entries are their own row index.
template <typename T>
struct WmmaForward {
  using Prob = T;
  static constexpr int kChunk = 16 * kWarps;   // 128: one 16-channel column of fragments per warp
  static constexpr int kStride = kChunk + 8;   // multiple of 8 elements (WMMA ldm), 32-byte aligned fragments
  static constexpr int kMaxChunks = kMaxChannels / kChunk;
  static_assert(kQueryTile == 32 && kKeyTile == 64 && kWarps == 8, "8 score fragments, 2 query halves");
  using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

  Accumulator s;
  Accumulator o[kMaxChunks][2];
  int row_of[Accumulator::num_elements];

  __device__ int warp() const { return threadIdx.x / 32; }

  __device__ void init(float* scratch) {
    for (int i = threadIdx.x; i < 16 * 16; i += blockDim.x) scratch[(i / 16) * kKeyTile + i % 16] = i / 16;
    __syncthreads();
    Accumulator rows;
    wmma::load_matrix_sync(rows, scratch, kKeyTile, wmma::mem_row_major);
#pragma unroll
    for (int t = 0; t < Accumulator::num_elements; ++t) row_of[t] = static_cast<int>(rows.x[t]);
    __syncthreads();
#pragma unroll
    for (int ch = 0; ch < kMaxChunks; ++ch)
#pragma unroll
      for (int r = 0; r < 2; ++r) wmma::fill_fragment(o[ch][r], 0.0f);
  }

  __device__ void clear_scores() { wmma::fill_fragment(s, 0.0f); }

  // A[i][c] = q_s[c][i] is column-major with ldm kQueryTile; B[c][j] = kv_s[j][c] is column-major with ldm kStride.
  __device__ void scores(const T* q_s, const T* kv_s, int c0, int width) {
    const int i0 = (warp() / 4) * 16;
    const int j0 = (warp() % 4) * 16;
    for (int kk = 0; kk < width; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
      wmma::load_matrix_sync(a, q_s + (c0 + kk) * kQueryTile + i0, kQueryTile);
      wmma::load_matrix_sync(b, kv_s + j0 * kStride + kk, kStride);
      wmma::mma_sync(s, a, b, s);
    }
  }

  __device__ void store_scores(float* s_s) const {
    wmma::store_matrix_sync(s_s + (warp() / 4) * 16 * kKeyTile + (warp() % 4) * 16, s, kKeyTile,
                            wmma::mem_row_major);
  }

  __device__ void rescale(const float* alpha_s) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int t = 0; t < Accumulator::num_elements; ++t) {
        const float alpha = alpha_s[16 * r + row_of[t]];
#pragma unroll
        for (int ch = 0; ch < kMaxChunks; ++ch) o[ch][r].x[t] *= alpha;
      }
  }

  // A[i][j] = p_s[i][j] is row-major with ldm kKeyTile; B[j][c] = kv_s[j][c] is row-major with ldm kStride.
  template <int ch>
  __device__ void accumulate(const Prob* p_s, const T* kv_s, int width) {
    const int c0 = 16 * warp();
    if (c0 >= width) return;
#pragma unroll
    for (int kk = 0; kk < kKeyTile; kk += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
      wmma::load_matrix_sync(b, kv_s + kk * kStride + c0, kStride);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, p_s + 16 * r * kKeyTile + kk, kKeyTile);
        wmma::mma_sync(o[ch][r], a, b, o[ch][r]);
      }
    }
  }

  // Column-major store with ldm kQueryTile: element (i, c) of fragment (r, warp) lands at o_s[c0 + c][16·r + i].
  template <int ch>
  __device__ void stage(float* o_s, int width) const {
    const int c0 = 16 * warp();
    if (c0 >= width) return;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      wmma::store_matrix_sync(o_s + c0 * kQueryTile + 16 * r, o[ch][r], kQueryTile, wmma::mem_col_major);
  }
};

// The tile of the architecture being compiled: tensor cores where it has them for T, else SIMT (bfloat16 on sm_75).
// The host sizes shared memory with the tensor-core tile, whose layout is the larger of the two at every width.
template <typename T>
using ForwardTile = std::conditional_t<has_tensor_cores<T>(), WmmaForward<T>, SimtForward<T>>;

// Shared-memory regions of the forward kernel, each 128-byte aligned (WMMA needs 32).
struct ForwardLayout {
  size_t q, kv, scores, probs, stats, total;
};

template <typename T, typename Tile>
__host__ __device__ ForwardLayout forward_layout(int padded) {
  ForwardLayout l{};
  l.q = 0;
  l.kv = l.q + align128(sizeof(T) * padded * kQueryTile);
  const size_t kv = sizeof(T) * kKeyTile * Tile::kStride;
  const size_t staged = sizeof(float) * Tile::kChunk * kQueryTile;  // the output staging aliases kv_s
  l.scores = l.kv + align128(kv > staged ? kv : staged);
  l.probs = l.scores + align128(sizeof(float) * kQueryTile * kKeyTile);
  l.stats = l.probs + align128(sizeof(typename Tile::Prob) * kQueryTile * kKeyTile);
  l.total = l.stats + align128(sizeof(float) * 3 * kQueryTile);
  return l;
}

// One online-softmax step over the score tile: 8 consecutive lanes share a query row, 8 keys each.
// Reads s_s (raw q·k), writes p_s = exp2(x − m_new) with x = s · xscale, and per row m, l and alpha.
template <typename Prob>
__device__ void softmax_step(const float* s_s, Prob* p_s, float* m_s, float* l_s, float* alpha_s, float xscale,
                             int valid_keys) {
  constexpr int kLanes = kThreads / kQueryTile;
  constexpr int kPerLane = kKeyTile / kLanes;
  static_assert(kLanes == 8 && 32 % kLanes == 0, "a row's lanes sit in one warp");
  const int row = threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  float x[kPerLane];
  float tile_max = -INFINITY;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int j = lane + kLanes * t;
    x[t] = j < valid_keys ? s_s[row * kKeyTile + j] * xscale : -INFINITY;
    tile_max = fmaxf(tile_max, x[t]);
  }
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2)
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
  const float m_old = m_s[row];
  const float m_new = fmaxf(m_old, tile_max);  // finite: every key tile holds at least one valid key
  float sum = 0.0f;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const float p = exp2f(x[t] - m_new);  // masked keys: exp2(−inf) = 0
    p_s[row * kKeyTile + lane + kLanes * t] = from_float<Prob>(p);
    sum += p;
  }
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float alpha = exp2f(m_old - m_new);  // 0 on the first tile (m_old = −inf)
  __syncwarp();                              // every lane has read m_s[row], l_s[row]
  if (lane == 0) {
    m_s[row] = m_new;
    l_s[row] = l_s[row] * alpha + sum;
    alpha_s[row] = alpha;
  }
}

// Calls f(std::integral_constant<int, ch>) for every channel chunk ch < kMaxChunks that holds channels: a
// compile-time chunk index keeps register arrays indexed by it in registers.
template <int... kChunks, typename F>
__device__ __forceinline__ void for_each_chunk(int padded, int chunk, F&& f, std::integer_sequence<int, kChunks...>) {
  ((kChunks * chunk < padded ? f(std::integral_constant<int, kChunks>{}) : void()), ...);
}

template <int kMaxChunks, typename F>
__device__ __forceinline__ void for_each_chunk(int padded, int chunk, F&& f) {
  for_each_chunk(padded, chunk, f, std::make_integer_sequence<int, kMaxChunks>{});
}

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(AttentionShape s, const T* __restrict__ q,
                                                           const T* __restrict__ k, const T* __restrict__ v,
                                                           T* __restrict__ out, float* __restrict__ lse) {
  using Tile = ForwardTile<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int padded = padded_channels(s.channels);
  const ForwardLayout layout = forward_layout<T, Tile>(padded);
  T* q_s = reinterpret_cast<T*>(smem + layout.q);        // [padded][kQueryTile]
  T* kv_s = reinterpret_cast<T*>(smem + layout.kv);      // [kKeyTile][kStride], one channel chunk of K or V
  float* o_s = reinterpret_cast<float*>(smem + layout.kv);  // [kChunk][kQueryTile], output staging at the end
  float* s_s = reinterpret_cast<float*>(smem + layout.scores);  // [kQueryTile][kKeyTile]
  auto* p_s = reinterpret_cast<typename Tile::Prob*>(smem + layout.probs);  // [kQueryTile][kKeyTile]
  float* m_s = reinterpret_cast<float*>(smem + layout.stats);
  float* l_s = m_s + kQueryTile;
  float* alpha_s = l_s + kQueryTile;

  const int b = blockIdx.y;
  const int n0 = blockIdx.x * kQueryTile;
  const long long q_offset = static_cast<long long>(b) * s.channels * s.queries;
  const long long kv_offset = static_cast<long long>(b) * s.channels * s.keys;
  const float xscale = detail::log2_scale<float>(s.scale);

  load_rows(q_s, q + q_offset, s.channels, padded, s.queries, n0, kQueryTile);
  for (int i = threadIdx.x; i < kQueryTile; i += blockDim.x) {
    m_s[i] = -INFINITY;
    l_s[i] = 0.0f;
  }
  Tile tile;
  tile.init(s_s);  // synchronises the block: q_s and the statistics are ready

  for (int j0 = 0; j0 < s.keys; j0 += kKeyTile) {
    tile.clear_scores();
    for (int c0 = 0; c0 < padded; c0 += Tile::kChunk) {
      const int width = min(Tile::kChunk, padded - c0);
      __syncthreads();  // kv_s is free (previous chunk, or the previous tile's V)
      load_chunk(kv_s, Tile::kStride, k + kv_offset, s.channels, s.keys, j0, kKeyTile, c0, width);
      __syncthreads();
      tile.scores(q_s, kv_s, c0, width);
    }
    tile.store_scores(s_s);  // s_s was last read by the previous softmax_step, several barriers ago
    __syncthreads();
    softmax_step(s_s, p_s, m_s, l_s, alpha_s, xscale, s.keys - j0);
    __syncthreads();
    tile.rescale(alpha_s);
    for_each_chunk<Tile::kMaxChunks>(padded, Tile::kChunk, [&](auto chunk) {
      constexpr int ch = decltype(chunk)::value;
      const int c0 = ch * Tile::kChunk;
      const int width = min(Tile::kChunk, padded - c0);
      __syncthreads();
      load_chunk(kv_s, Tile::kStride, v + kv_offset, s.channels, s.keys, j0, kKeyTile, c0, width);
      __syncthreads();
      tile.template accumulate<ch>(p_s, kv_s, width);
    });
  }

  for_each_chunk<Tile::kMaxChunks>(padded, Tile::kChunk, [&](auto chunk) {
    constexpr int ch = decltype(chunk)::value;
    const int c0 = ch * Tile::kChunk;
    const int width = min(Tile::kChunk, padded - c0);
    __syncthreads();  // o_s aliases kv_s
    tile.template stage<ch>(o_s, width);
    __syncthreads();
    for (int i = threadIdx.x; i < width * kQueryTile; i += blockDim.x) {
      const int c = c0 + i / kQueryTile;
      const int r = i % kQueryTile;
      if (c < s.channels && n0 + r < s.queries)
        out[q_offset + static_cast<long long>(c) * s.queries + n0 + r] = from_float<T>(o_s[i] / l_s[r]);
    }
  });
  for (int r = threadIdx.x; r < kQueryTile; r += blockDim.x)
    if (n0 + r < s.queries)
      lse[static_cast<long long>(b) * s.queries + n0 + r] = detail::log2_sum_exp2(m_s[r], l_s[r]);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward.

template <typename T>
__global__ void delta_kernel(AttentionShape s, const T* __restrict__ out, const T* __restrict__ grad_out,
                             float* __restrict__ delta) {
  const long long total = static_cast<long long>(s.batch) * s.queries;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long b = i / s.queries;
    const long long n = i - b * s.queries;
    const long long base = b * s.channels * s.queries + n;
    float sum = 0.0f;
    for (int c = 0; c < s.channels; ++c) {
      const long long at = base + static_cast<long long>(c) * s.queries;
      sum += to_float(grad_out[at]) * to_float(out[at]);
    }
    delta[i] = sum;
  }
}

constexpr int kBackwardChunk = 64;
constexpr int kBackwardStride = kBackwardChunk + 1;
constexpr int kBackwardChunks = kMaxChannels / kBackwardChunk;

struct BackwardLayout {
  size_t r1, r2, st, probs, dscores, total;
};

template <typename T>
__host__ __device__ BackwardLayout backward_layout(int padded) {
  BackwardLayout l{};
  l.r1 = 0;
  l.r2 = l.r1 + align128(sizeof(T) * padded * kRowTile);
  l.st = l.r2 + align128(sizeof(T) * padded * kRowTile);
  l.probs = l.st + align128(sizeof(T) * kStreamTile * kBackwardStride);
  l.dscores = l.probs + align128(sizeof(float) * kRowTile * kStreamTile);
  l.total = l.dscores + align128(sizeof(float) * kRowTile * kStreamTile);
  return l;
}

// One pass of the backward. A block owns kRowTile rows of one map; the resident pair (R1, R2) stays in shared
// memory, the streamed pair (S1, S2) comes kStreamTile items at a time in channel chunks:
//   kKeyRows = false: rows are queries, (R1, R2) = (q, dO), (S1, S2) = (k, v); grad1 = dQ.
//   kKeyRows = true:  rows are keys,    (R1, R2) = (k, v),  (S1, S2) = (q, dO); grad1 = dK, grad2 = dV.
// For each streamed tile: X = R1ᵀS1 (the scores, transposed when rows are keys), Y = R2ᵀS2 (dP, likewise),
// P = exp2(X·xscale − lse2), dS = P ∘ (Y − D) with lse and D of the tile's query, then
// acc1 += dS·S1ᵀ and, for key rows, acc2 += P·S2ᵀ. Thread (ty, tx) owns row ty, streamed items tx + 16·k and
// chunk channels tx + 16·k (k < 4). grad1 = scale·acc1, grad2 = acc2, each written once by its owner.
template <typename T, bool kKeyRows>
__global__ void __launch_bounds__(kThreads) backward_kernel(AttentionShape s, const T* __restrict__ q,
                                                            const T* __restrict__ k, const T* __restrict__ v,
                                                            const T* __restrict__ grad_out,
                                                            const float* __restrict__ lse,
                                                            const float* __restrict__ delta,
                                                            float* __restrict__ grad1, float* __restrict__ grad2) {
  static_assert(kRowTile == 16 && kStreamTile == 64 && kBackwardChunk == 64 && kThreads == 256, "thread mapping");
  extern __shared__ __align__(128) unsigned char smem[];
  const int padded = padded_channels(s.channels);
  const BackwardLayout layout = backward_layout<T>(padded);
  T* r1_s = reinterpret_cast<T*>(smem + layout.r1);                // [padded][kRowTile]
  T* r2_s = reinterpret_cast<T*>(smem + layout.r2);                // [padded][kRowTile]
  T* st_s = reinterpret_cast<T*>(smem + layout.st);                // [kStreamTile][kBackwardStride]
  float* p_s = reinterpret_cast<float*>(smem + layout.probs);      // [kRowTile][kStreamTile]
  float* ds_s = reinterpret_cast<float*>(smem + layout.dscores);   // [kRowTile][kStreamTile]

  const int rows = kKeyRows ? s.keys : s.queries;
  const int items = kKeyRows ? s.queries : s.keys;
  const int b = blockIdx.y;
  const int r0 = blockIdx.x * kRowTile;
  const long long row_offset = static_cast<long long>(b) * s.channels * rows;
  const long long item_offset = static_cast<long long>(b) * s.channels * items;
  const T* r1 = (kKeyRows ? k : q) + row_offset;
  const T* r2 = (kKeyRows ? v : grad_out) + row_offset;
  const T* s1 = (kKeyRows ? q : k) + item_offset;
  const T* s2 = (kKeyRows ? grad_out : v) + item_offset;
  const float* lse_b = lse + static_cast<long long>(b) * s.queries;
  const float* delta_b = delta + static_cast<long long>(b) * s.queries;
  const float xscale = detail::log2_scale<float>(s.scale);
  const int ty = threadIdx.x / 16;
  const int tx = threadIdx.x % 16;

  load_rows(r1_s, r1, s.channels, padded, rows, r0, kRowTile);
  load_rows(r2_s, r2, s.channels, padded, rows, r0, kRowTile);

  float acc1[kBackwardChunks][4] = {};
  float acc2[kBackwardChunks][4] = {};

  // x[k] += Σ_c resident[c][ty] · streamed[c][tx + 16k] over all channels, streaming `src` chunk by chunk.
  const auto product = [&](const T* resident, const T* src, int i0, float(&x)[4]) {
    for (int c0 = 0; c0 < padded; c0 += kBackwardChunk) {
      const int width = min(kBackwardChunk, padded - c0);
      __syncthreads();
      load_chunk(st_s, kBackwardStride, src, s.channels, items, i0, kStreamTile, c0, width);
      __syncthreads();
      for (int cl = 0; cl < width; ++cl) {
        const float a = to_float(resident[(c0 + cl) * kRowTile + ty]);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) x[kk] += a * to_float(st_s[(tx + 16 * kk) * kBackwardStride + cl]);
      }
    }
  };
  // acc[ch][k] += Σ_i weights[ty][i] · streamed[ch·64 + tx + 16k][i], streaming `src` chunk by chunk.
  const auto accumulate = [&](const float* weights, const T* src, int i0, float(&acc)[kBackwardChunks][4]) {
#pragma unroll
    for (int ch = 0; ch < kBackwardChunks; ++ch) {
      const int c0 = ch * kBackwardChunk;
      if (c0 < padded) {
        const int width = min(kBackwardChunk, padded - c0);
        __syncthreads();
        load_chunk(st_s, kBackwardStride, src, s.channels, items, i0, kStreamTile, c0, width);
        __syncthreads();
        for (int i = 0; i < kStreamTile; ++i) {
          const float w = weights[ty * kStreamTile + i];
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) acc[ch][kk] += w * to_float(st_s[i * kBackwardStride + tx + 16 * kk]);
        }
      }
    }
  };

  for (int i0 = 0; i0 < items; i0 += kStreamTile) {
    float x[4] = {};
    float y[4] = {};
    product(r1_s, s1, i0, x);
    product(r2_s, s2, i0, y);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int item = i0 + tx + 16 * kk;
      const int row = r0 + ty;
      const int query = kKeyRows ? item : row;
      const bool valid = item < items && row < rows;
      const float p = valid ? exp2f(x[kk] * xscale - lse_b[query]) : 0.0f;
      // p_s/ds_s were last read by the previous tile's accumulate, before the barriers in product()
      p_s[ty * kStreamTile + tx + 16 * kk] = p;
      ds_s[ty * kStreamTile + tx + 16 * kk] = valid ? p * (y[kk] - delta_b[query]) : 0.0f;
    }
    accumulate(ds_s, s1, i0, acc1);  // its first barrier publishes p_s and ds_s
    if (kKeyRows) accumulate(p_s, s2, i0, acc2);
  }

#pragma unroll
  for (int ch = 0; ch < kBackwardChunks; ++ch)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int c = ch * kBackwardChunk + tx + 16 * kk;
      const int row = r0 + ty;
      if (c < s.channels && row < rows) {
        const long long at = row_offset + static_cast<long long>(c) * rows + row;
        grad1[at] = s.scale * acc1[ch][kk];
        if (kKeyRows) grad2[at] = acc2[ch][kk];
      }
    }
}

bool valid_shape(const AttentionShape& s) {
  return s.batch >= 0 && s.channels > 0 && s.channels <= kMaxChannels && s.queries >= 0 && s.keys > 0 &&
         s.batch <= 65535;
}

}  // namespace

int memory_attention_forward_cuda(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v,
                                  void* out, void* lse, Stream stream) {
  if (!valid_shape(s)) return static_cast<int>(cudaErrorInvalidValue);
  if (s.batch == 0 || s.queries == 0) return 0;
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = forward_kernel<T>;
    const size_t bytes = forward_layout<T, ForwardTile<T>>(padded_channels(s.channels)).total;
    const cudaError_t status = reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes);
    if (status != cudaSuccess) return static_cast<int>(status);
    const dim3 grid((s.queries + kQueryTile - 1) / kQueryTile, s.batch);
    kernel<<<grid, kThreads, bytes, static_cast<cudaStream_t>(stream)>>>(
        s, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(out),
        static_cast<float*>(lse));
    return static_cast<int>(cudaGetLastError());
  });
}

int memory_attention_backward_cuda(DType dtype, const AttentionShape& s, const void* q, const void* k,
                                   const void* v, const void* out, const void* lse, const void* grad_out,
                                   void* delta, void* grad_q, void* grad_k, void* grad_v, Stream stream) {
  if (!valid_shape(s)) return static_cast<int>(cudaErrorInvalidValue);
  if (s.batch == 0 || s.queries == 0) return 0;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  return dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* q_t = static_cast<const T*>(q);
    const T* k_t = static_cast<const T*>(k);
    const T* v_t = static_cast<const T*>(v);
    const T* grad_out_t = static_cast<const T*>(grad_out);
    const auto* lse_f = static_cast<const float*>(lse);
    auto* delta_f = static_cast<float*>(delta);
    delta_kernel<T><<<blocks_for(static_cast<long long>(s.batch) * s.queries, kThreads), kThreads, 0,
                      cuda_stream>>>(s, static_cast<const T*>(out), grad_out_t, delta_f);
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return static_cast<int>(status);

    const size_t bytes = backward_layout<T>(padded_channels(s.channels)).total;
    const auto query_rows = backward_kernel<T, false>;
    const auto key_rows = backward_kernel<T, true>;
    for (const auto kernel : {query_rows, key_rows}) {
      status = reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes);
      if (status != cudaSuccess) return static_cast<int>(status);
    }
    query_rows<<<dim3((s.queries + kRowTile - 1) / kRowTile, s.batch), kThreads, bytes, cuda_stream>>>(
        s, q_t, k_t, v_t, grad_out_t, lse_f, delta_f, static_cast<float*>(grad_q), nullptr);
    status = cudaGetLastError();
    if (status != cudaSuccess) return static_cast<int>(status);
    key_rows<<<dim3((s.keys + kRowTile - 1) / kRowTile, s.batch), kThreads, bytes, cuda_stream>>>(
        s, q_t, k_t, v_t, grad_out_t, lse_f, delta_f, static_cast<float*>(grad_k), static_cast<float*>(grad_v));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mcnet_rt
