// Tiling and softmax arithmetic shared by the memory-attention kernels and their CPU twins, so that the twin runs
// the kernels' algorithm: the same tiles, the same online softmax in base 2, the same log-sum-exp.
#pragma once

#include "mcnet_rt/detail/host_device.h"

namespace mcnet_rt {
namespace detail {

// Forward: a block owns kQueryTile queries and streams the keys kKeyTile at a time.
constexpr int kQueryTile = 32;
constexpr int kKeyTile = 64;
// Backward: a block owns kRowTile rows (queries in the dQ pass, keys in the dK/dV pass) and streams the other side
// kStreamTile at a time.
constexpr int kRowTile = 16;
constexpr int kStreamTile = 64;
// The CUDA kernels keep a block's accumulators for all channels in registers, which bounds the head size.
constexpr int kMaxChannels = 512;

constexpr double kLog2e = 1.4426950408889634;

MCNET_HD float exp2_of(float x) { return exp2f(x); }
MCNET_HD double exp2_of(double x) { return exp2(x); }
MCNET_HD float log2_of(float x) { return log2f(x); }
MCNET_HD double log2_of(double x) { return log2(x); }

// Scores are kept as x = scale·log2(e)·q·k, so that softmax weights are exp2(x − m) with m the running maximum.
template <typename A>
MCNET_HD A log2_scale(float scale) {
  return static_cast<A>(scale) * static_cast<A>(kLog2e);
}

// The row's log-sum-exp in base-2 units, log2 Σ exp2(x), from its running maximum m and sum l = Σ exp2(x − m).
// Kept in base 2 for the backward, which forms exp2(x − lse2) directly: converting a natural log-sum-exp back
// (lse·log2e) would round the product to ulp(|x|), ~1e-4 relative error in P for fp32 logits in the thousands.
template <typename A>
MCNET_HD A log2_sum_exp2(A m, A l) {
  return m + log2_of(l);
}

}  // namespace detail
}  // namespace mcnet_rt
