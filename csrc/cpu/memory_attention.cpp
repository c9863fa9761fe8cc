// CPU twin of kernels/memory_attention.cu: the kernels' tiles and online softmax (base 2, running max and sum,
// rescaled accumulator), run per tile in float32 or float64. Tiles are independent, so they are spread over
// threads with a static partition: each output element is computed by one tile in a fixed order (deterministic).
// Inner loops run along contiguous memory (channel-major rows of the maps, transposed local tiles) to vectorise.
#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "mcnet_rt/detail/memory_attention_math.h"
#include "mcnet_rt/memory_attention.h"

namespace mcnet_rt {
namespace {

using detail::kKeyTile;
using detail::kQueryTile;
using detail::kRowTile;
using detail::kStreamTile;

// Runs task(i) for i < count on up to hardware_concurrency threads, each owning a contiguous range of tasks.
template <typename Task>
void parallel_tiles(long long count, const Task& task) {
  const long long workers = std::min<long long>(count, std::max(1u, std::thread::hardware_concurrency()));
  if (workers <= 1) {
    for (long long i = 0; i < count; ++i) task(i);
    return;
  }
  std::vector<std::thread> threads;
  for (long long w = 0; w < workers; ++w)
    threads.emplace_back([&, w] {
      for (long long i = count * w / workers; i < count * (w + 1) / workers; ++i) task(i);
    });
  for (auto& t : threads) t.join();
}

// One query tile of the forward (the body of one CUDA block).
template <typename T>
void forward_tile(const AttentionShape& s, int b, int n0, const T* q, const T* k, const T* v, T* out, T* lse) {
  const int C = s.channels, nq = s.queries, nk = s.keys;
  const int rows = std::min(kQueryTile, nq - n0);
  const T* qb = q + static_cast<long long>(b) * C * nq;
  const T* kb = k + static_cast<long long>(b) * C * nk;
  const T* vb = v + static_cast<long long>(b) * C * nk;
  const T xscale = detail::log2_scale<T>(s.scale);
  std::vector<T> o(static_cast<size_t>(C) * kQueryTile, T(0));  // o[c][i], the output accumulator
  T scores[kQueryTile][kKeyTile];
  T probs_t[kKeyTile][kQueryTile];  // P transposed, so that the P·V loop runs along queries
  T m[kQueryTile], l[kQueryTile], alpha[kQueryTile];
  std::fill(m, m + kQueryTile, -INFINITY);
  std::fill(l, l + kQueryTile, T(0));

  for (int j0 = 0; j0 < nk; j0 += kKeyTile) {
    const int cols = std::min(kKeyTile, nk - j0);
    for (int i = 0; i < rows; ++i) std::fill(scores[i], scores[i] + cols, T(0));
    for (int c = 0; c < C; ++c) {
      const T* q_row = qb + static_cast<long long>(c) * nq + n0;
      const T* k_row = kb + static_cast<long long>(c) * nk + j0;
      for (int i = 0; i < rows; ++i) {
        const T a = q_row[i];
        for (int j = 0; j < cols; ++j) scores[i][j] += a * k_row[j];
      }
    }
    for (int i = 0; i < rows; ++i) {  // online softmax step, as softmax_step in the kernel
      T tile_max = -INFINITY;
      for (int j = 0; j < cols; ++j) tile_max = std::max(tile_max, scores[i][j] * xscale);
      const T m_new = std::max(m[i], tile_max);
      T sum = 0;
      for (int j = 0; j < cols; ++j) {
        const T p = detail::exp2_of(scores[i][j] * xscale - m_new);
        probs_t[j][i] = p;
        sum += p;
      }
      alpha[i] = detail::exp2_of(m[i] - m_new);
      m[i] = m_new;
      l[i] = l[i] * alpha[i] + sum;
    }
    for (int c = 0; c < C; ++c) {
      T* o_row = o.data() + static_cast<size_t>(c) * kQueryTile;
      const T* v_row = vb + static_cast<long long>(c) * nk + j0;
      for (int i = 0; i < rows; ++i) o_row[i] *= alpha[i];
      for (int j = 0; j < cols; ++j) {
        const T value = v_row[j];
        for (int i = 0; i < rows; ++i) o_row[i] += value * probs_t[j][i];
      }
    }
  }
  for (int c = 0; c < C; ++c) {
    T* out_row = out + static_cast<long long>(b) * C * nq + static_cast<long long>(c) * nq + n0;
    for (int i = 0; i < rows; ++i) out_row[i] = o[static_cast<size_t>(c) * kQueryTile + i] / l[i];
  }
  for (int i = 0; i < rows; ++i) lse[static_cast<long long>(b) * nq + n0 + i] = detail::log2_sum_exp2(m[i], l[i]);
}

template <typename T>
void forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* out, T* lse) {
  const int tiles = (s.queries + kQueryTile - 1) / kQueryTile;
  parallel_tiles(static_cast<long long>(s.batch) * tiles, [&](long long t) {
    forward_tile(s, static_cast<int>(t / tiles), static_cast<int>(t % tiles) * kQueryTile, q, k, v, out, lse);
  });
}

// One row tile of a backward pass (the body of one backward_kernel block; see there for the roles).
template <typename T, bool kKeyRows>
void backward_tile(const AttentionShape& s, int b, int r0, const T* q, const T* k, const T* v, const T* grad_out,
                   const T* lse, const T* delta, T* grad1, T* grad2) {
  const int C = s.channels;
  const int n_rows = kKeyRows ? s.keys : s.queries;
  const int n_items = kKeyRows ? s.queries : s.keys;
  const int rows = std::min(kRowTile, n_rows - r0);
  const long long row_offset = static_cast<long long>(b) * C * n_rows;
  const long long item_offset = static_cast<long long>(b) * C * n_items;
  const T* r1 = (kKeyRows ? k : q) + row_offset;
  const T* r2 = (kKeyRows ? v : grad_out) + row_offset;
  const T* s1 = (kKeyRows ? q : k) + item_offset;
  const T* s2 = (kKeyRows ? grad_out : v) + item_offset;
  const T* lse_b = lse + static_cast<long long>(b) * s.queries;
  const T* delta_b = delta + static_cast<long long>(b) * s.queries;
  const T xscale = detail::log2_scale<T>(s.scale);
  std::vector<T> acc1(static_cast<size_t>(C) * kRowTile, T(0));  // acc[c][r]
  std::vector<T> acc2(kKeyRows ? acc1.size() : 0, T(0));
  T x[kRowTile][kStreamTile], y[kRowTile][kStreamTile];
  T probs_t[kStreamTile][kRowTile], dscores_t[kStreamTile][kRowTile];

  for (int i0 = 0; i0 < n_items; i0 += kStreamTile) {
    const int cols = std::min(kStreamTile, n_items - i0);
    for (int r = 0; r < rows; ++r) {
      std::fill(x[r], x[r] + cols, T(0));
      std::fill(y[r], y[r] + cols, T(0));
    }
    for (int c = 0; c < C; ++c) {
      const long long row_at = static_cast<long long>(c) * n_rows + r0;
      const long long item_at = static_cast<long long>(c) * n_items + i0;
      for (int r = 0; r < rows; ++r) {
        const T a1 = r1[row_at + r], a2 = r2[row_at + r];
        for (int i = 0; i < cols; ++i) {
          x[r][i] += a1 * s1[item_at + i];
          y[r][i] += a2 * s2[item_at + i];
        }
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < cols; ++i) {
        const int query = kKeyRows ? i0 + i : r0 + r;
        const T p = detail::exp2_of(x[r][i] * xscale - lse_b[query]);
        probs_t[i][r] = p;
        dscores_t[i][r] = p * (y[r][i] - delta_b[query]);
      }
    for (int c = 0; c < C; ++c) {
      const long long item_at = static_cast<long long>(c) * n_items + i0;
      T* a1 = acc1.data() + static_cast<size_t>(c) * kRowTile;
      for (int i = 0; i < cols; ++i) {
        const T w = s1[item_at + i];
        for (int r = 0; r < rows; ++r) a1[r] += w * dscores_t[i][r];
      }
      if (kKeyRows) {
        T* a2 = acc2.data() + static_cast<size_t>(c) * kRowTile;
        for (int i = 0; i < cols; ++i) {
          const T w = s2[item_at + i];
          for (int r = 0; r < rows; ++r) a2[r] += w * probs_t[i][r];
        }
      }
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < rows; ++r) {
      const long long at = row_offset + static_cast<long long>(c) * n_rows + r0 + r;
      grad1[at] = static_cast<T>(s.scale) * acc1[static_cast<size_t>(c) * kRowTile + r];
      if (kKeyRows) grad2[at] = acc2[static_cast<size_t>(c) * kRowTile + r];
    }
}

template <typename T, bool kKeyRows>
void backward_pass(const AttentionShape& s, const T* q, const T* k, const T* v, const T* grad_out, const T* lse,
                   const T* delta, T* grad1, T* grad2) {
  const int tiles = ((kKeyRows ? s.keys : s.queries) + kRowTile - 1) / kRowTile;
  parallel_tiles(static_cast<long long>(s.batch) * tiles, [&](long long t) {
    backward_tile<T, kKeyRows>(s, static_cast<int>(t / tiles), static_cast<int>(t % tiles) * kRowTile, q, k, v,
                               grad_out, lse, delta, grad1, grad2);
  });
}

template <typename T>
void backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
              const T* grad_out, T* delta, T* grad_q, T* grad_k, T* grad_v) {
  const long long nq = s.queries;
  for (int b = 0; b < s.batch; ++b) {  // D = rowsum(dO ∘ O), as delta_kernel
    T* d = delta + b * nq;
    std::fill(d, d + nq, T(0));
    for (int c = 0; c < s.channels; ++c) {
      const long long at = (static_cast<long long>(b) * s.channels + c) * nq;
      for (long long n = 0; n < nq; ++n) d[n] += grad_out[at + n] * out[at + n];
    }
  }
  backward_pass<T, false>(s, q, k, v, grad_out, lse, delta, grad_q, nullptr);
  backward_pass<T, true>(s, q, k, v, grad_out, lse, delta, grad_k, grad_v);
}

bool valid_shape(const AttentionShape& s) {
  return s.batch >= 0 && s.channels > 0 && s.queries >= 0 && s.keys > 0;
}

}  // namespace

int memory_attention_forward_cpu(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v,
                                 void* out, void* lse) {
  if (!valid_shape(s)) return kUnsupported;
  switch (dtype) {
    case DType::Float32:
      forward(s, static_cast<const float*>(q), static_cast<const float*>(k), static_cast<const float*>(v),
              static_cast<float*>(out), static_cast<float*>(lse));
      return 0;
    case DType::Float64:
      forward(s, static_cast<const double*>(q), static_cast<const double*>(k), static_cast<const double*>(v),
              static_cast<double*>(out), static_cast<double*>(lse));
      return 0;
    default:
      return kUnsupported;
  }
}

int memory_attention_backward_cpu(DType dtype, const AttentionShape& s, const void* q, const void* k,
                                  const void* v, const void* out, const void* lse, const void* grad_out,
                                  void* delta, void* grad_q, void* grad_k, void* grad_v) {
  if (!valid_shape(s)) return kUnsupported;
  switch (dtype) {
    case DType::Float32:
      backward(s, static_cast<const float*>(q), static_cast<const float*>(k), static_cast<const float*>(v),
               static_cast<const float*>(out), static_cast<const float*>(lse), static_cast<const float*>(grad_out),
               static_cast<float*>(delta), static_cast<float*>(grad_q), static_cast<float*>(grad_k),
               static_cast<float*>(grad_v));
      return 0;
    case DType::Float64:
      backward(s, static_cast<const double*>(q), static_cast<const double*>(k), static_cast<const double*>(v),
               static_cast<const double*>(out), static_cast<const double*>(lse),
               static_cast<const double*>(grad_out), static_cast<double*>(delta), static_cast<double*>(grad_q),
               static_cast<double*>(grad_k), static_cast<double*>(grad_v));
      return 0;
    default:
      return kUnsupported;
  }
}

}  // namespace mcnet_rt
