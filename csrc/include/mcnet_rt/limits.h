// The launchers' limits in one table: which element types have kernels on which device, how large a tensor the
// 32-bit indexing admits, how many channels the attention kernel holds. The torch op layer (csrc/torch) checks
// operands against it and `_C.limits` exports it to Python, so neither side keeps a copy.
#pragma once

#include "mcnet_rt/common.h"
#include "mcnet_rt/detail/memory_attention_math.h"

namespace mcnet_rt {

struct DTypeInfo {
  const char* name;  // torch's name of the type
  DType code;
  bool cuda;  // the CUDA kernels run it
  bool cpu;   // the CPU twins run it
};

inline constexpr DTypeInfo kDTypes[] = {
    {"float32", DType::Float32, true, true},
    {"float16", DType::Float16, true, false},
    {"bfloat16", DType::BFloat16, true, false},
    {"float64", DType::Float64, false, true},
};

// The shape structs hold int sizes and the kernels index with int: elements per tensor.
constexpr long long kMaxElements = 2147483647LL;

// The CUDA attention kernels keep a block's accumulators for every channel in registers (the twins have no bound).
constexpr int kMaxAttentionChannels = detail::kMaxChannels;

}  // namespace mcnet_rt
