// mcnet_rt::memory_attention (public; and its `_into` form) and memory_attention_forward,
// memory_attention_backward (private) over the launchers of mcnet_rt/memory_attention.h. The rules are those of
// mcnet_rt/ops/memory_attention.py's fakes.
#include "mcnet_rt/memory_attention.h"

#include <tuple>

#include "mcnet_rt/limits.h"
#include "op_support.h"

namespace mcnet_rt::ops {
namespace {

int64_t positions(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 2; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// query (B,C,Nq...), key and value (B,C,Nk...) of one kernel dtype on one device, packed, `ndim`-D (3: token
// rows, 4: maps), with at least one key; at most kMaxAttentionChannels channels on CUDA.
void check_attention(const char* op, const Tensor& query, const Tensor& key, const Tensor& value, int64_t ndim) {
  check_tensor(op, "query", query, kernel_dtypes(query.device()), query.device(), ndim);
  for (const auto& [operand, t] : {std::pair<const char*, const Tensor&>{"key", key},
                                   std::pair<const char*, const Tensor&>{"value", value}}) {
    check_tensor(op, operand, t, {query.scalar_type()}, query.device(), ndim);
    check_size(op, operand, t, 0, query.size(0), "the batch of query");
    check_size(op, operand, t, 1, query.size(1), "the channels of query");
  }
  for (int64_t d = 2; d < ndim; ++d) {
    check(value.size(d) == key.size(d),
          std::string(op) + ": value " + shape(value) + " must have the shape of key " + shape(key));
  }
  check(positions(key) > 0, std::string(op) + ": key has no positions");
  check(!query.is_cuda() || query.size(1) <= kMaxAttentionChannels,
        std::string(op) + ": the CUDA kernel supports up to " + std::to_string(kMaxAttentionChannels) +
            " channels, not " + std::to_string(query.size(1)));
}

AttentionShape attention_shape(const Tensor& query, const Tensor& key, double scale) {
  return {int(query.size(0)), int(query.size(1)), int(positions(query)), int(positions(key)), float(scale)};
}

// Into `out` (like query) and `lse`, the base-2 log-sum-exp (B, Nq) in the accumulation dtype.
void launch_forward(const char* op, const Tensor& query, const Tensor& key, const Tensor& value, double scale,
                    const Tensor& out, const Tensor& lse) {
  const AttentionShape s = attention_shape(query, key, scale);
  const DType t = dtype_code(query.scalar_type());
  run(op, query, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(memory_attention_forward_cuda(t, s, query.data_ptr(), key.data_ptr(),
                                                                   value.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                                                   stream))
                : memory_attention_forward_cpu(t, s, query.data_ptr(), key.data_ptr(), value.data_ptr(),
                                               out.data_ptr(), lse.data_ptr());
  });
}

Tensor new_lse(const Tensor& query) {
  return torch::stable::new_empty(query, {query.size(0), positions(query)}, accumulation_dtype(query.scalar_type()));
}

std::tuple<Tensor, Tensor> memory_attention_forward(Tensor query, Tensor key, Tensor value, double scale) {
  check_attention("memory_attention_forward", query, key, value, 3);
  Tensor out = torch::stable::empty_like(query);
  Tensor lse = new_lse(query);
  launch_forward("memory_attention_forward", query, key, value, scale, out, lse);
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> memory_attention_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value,
                                                             Tensor out, Tensor lse, double scale) {
  const char* op = "memory_attention_backward";
  check_attention(op, query, key, value, 3);
  for (const auto& [operand, t] : {std::pair<const char*, const Tensor&>{"grad_out", grad_out},
                                   std::pair<const char*, const Tensor&>{"out", out}}) {
    check(t.scalar_type() == query.scalar_type() && t.device() == query.device() && t.dim() == 3 &&
              t.size(0) == query.size(0) && t.size(1) == query.size(1) && t.size(2) == query.size(2),
          std::string(op) + ": " + operand + " (" + name(t.scalar_type()) + ", " + name(t.device()) + ", " +
              shape(t) + ") must be like query");
  }
  check_tensor(op, "out", out, {query.scalar_type()}, query.device(), 3);
  const ScalarType acc = accumulation_dtype(query.scalar_type());
  check_tensor(op, "lse", lse, {acc}, query.device(), 2);
  check(lse.size(0) == query.size(0) && lse.size(1) == query.size(2),
        std::string(op) + ": lse must be (B,Nq), not " + shape(lse));
  grad_out = torch::stable::contiguous(grad_out);
  Tensor delta = torch::stable::empty_like(lse);
  Tensor grad_query = torch::stable::new_empty(query, {query.size(0), query.size(1), query.size(2)}, acc);
  Tensor grad_key = torch::stable::new_empty(key, {key.size(0), key.size(1), key.size(2)}, acc);
  Tensor grad_value = torch::stable::new_empty(value, {value.size(0), value.size(1), value.size(2)}, acc);
  const AttentionShape s = attention_shape(query, key, scale);
  const DType t = dtype_code(query.scalar_type());
  run(op, query, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(memory_attention_backward_cuda(
                      t, s, query.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), lse.data_ptr(),
                      grad_out.data_ptr(), delta.data_ptr(), grad_query.data_ptr(), grad_key.data_ptr(),
                      grad_value.data_ptr(), stream))
                : memory_attention_backward_cpu(t, s, query.data_ptr(), key.data_ptr(), value.data_ptr(),
                                                out.data_ptr(), lse.data_ptr(), grad_out.data_ptr(), delta.data_ptr(),
                                                grad_query.data_ptr(), grad_key.data_ptr(), grad_value.data_ptr());
  });
  return {grad_query, grad_key, grad_value};
}

// The public op on packed maps: the launcher reads (B,C,H,W) as (B,C,H·W) rows as they are.
Tensor memory_attention(Tensor query, Tensor key, Tensor value, double scale) {
  check_attention("memory_attention", query, key, value, 4);
  Tensor out = torch::stable::empty_like(query);
  launch_forward("memory_attention", query, key, value, scale, out, new_lse(query));
  return out;
}

// The public op into `out`; its log-sum-exp, unused here, lives in `workspace` (B·Nq accumulation-dtype elements).
void memory_attention_into(Tensor query, Tensor key, Tensor value, double scale, Tensor out, Tensor workspace) {
  const char* op = "memory_attention_into";
  check_attention(op, query, key, value, 4);
  check_out(op, out, query, {query.size(0), query.size(1), query.size(2), query.size(3)});
  const Tensor lse = workspace_rows(op, workspace, query.size(0), positions(query),
                                    accumulation_dtype(query.scalar_type()), query.device());
  launch_forward(op, query, key, value, scale, out, lse);
}

}  // namespace

void register_memory_attention(Library& m) {
  m.impl("memory_attention_forward", TORCH_BOX(&memory_attention_forward));
  m.impl("memory_attention_backward", TORCH_BOX(&memory_attention_backward));
  m.impl("memory_attention", TORCH_BOX(&memory_attention));
  m.impl("memory_attention_into", TORCH_BOX(&memory_attention_into));
}

}  // namespace mcnet_rt::ops

MCNET_RT_REGISTER_IMPLS(mcnet_rt::ops::register_memory_attention)
