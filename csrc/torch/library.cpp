// The schemas of the mcnet_rt ops, the one place they are defined (the implementations register per family in
// warp.cpp, modulated_conv.cpp, memory_attention.cpp; Python adds the fake implementations and autograd).
// Public ops (what exporters see: ONNX custom-domain nodes, TensorRT plugins) take packed operands and run
// inference; their `_into` forms write into a given output (and take their temporaries from a given float32
// workspace), for callers that own the memory: the TensorRT plugins. The others are the private pieces of the
// autograd path.
#include "op_support.h"

STABLE_TORCH_LIBRARY(mcnet_rt, m) {
  // public
  m.def("warp_features(Tensor features, Tensor deformation, Tensor? occlusion) -> Tensor");
  m.def("sparse_warp(Tensor image, Tensor motions) -> Tensor");
  m.def("modulated_conv2d(Tensor x, Tensor weight, Tensor styles, bool demodulate, float eps) -> Tensor");
  m.def("dynamic_conv2d(Tensor x, Tensor expert_weight, Tensor expert_bias, Tensor gate) -> Tensor");
  m.def("memory_attention(Tensor query, Tensor key, Tensor value, float scale) -> Tensor");
  // public, into a given output
  m.def("warp_features_into(Tensor features, Tensor deformation, Tensor? occlusion, Tensor(a!) out) -> ()");
  m.def("sparse_warp_into(Tensor image, Tensor motions, Tensor(a!) out) -> ()");
  m.def("modulated_conv2d_into(Tensor x, Tensor weight, Tensor styles, bool demodulate, float eps, Tensor(a!) out, "
        "Tensor(b!) workspace) -> ()");
  m.def("dynamic_conv2d_into(Tensor x, Tensor expert_weight, Tensor expert_bias, Tensor gate, Tensor(a!) out, "
        "Tensor(b!) workspace) -> ()");
  m.def("memory_attention_into(Tensor query, Tensor key, Tensor value, float scale, Tensor(a!) out, "
        "Tensor(b!) workspace) -> ()");
  // private
  m.def("warp(Tensor features, Tensor deformation, Tensor? occlusion, SymInt grids, bool align_corners) -> Tensor");
  m.def("warp_backward(Tensor grad_out, Tensor features, Tensor deformation, Tensor? occlusion, SymInt grids, "
        "bool align_corners) -> (Tensor, Tensor, Tensor)");
  m.def("persample_conv2d(Tensor x, Tensor weight, Tensor? mix, Tensor? in_scale, Tensor? out_scale, "
        "Tensor? bias, bool transposed) -> Tensor");
  m.def("persample_conv2d_weight_grad(Tensor image, Tensor rows) -> Tensor");
  m.def("demodulation(Tensor weight, Tensor styles, float eps) -> Tensor");
  m.def("demodulation_backward(Tensor grad_demod, Tensor weight, Tensor styles, Tensor demod) -> (Tensor, Tensor)");
  m.def("memory_attention_forward(Tensor query, Tensor key, Tensor value, float scale) -> (Tensor, Tensor)");
  m.def("memory_attention_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor out, "
        "Tensor lse, float scale) -> (Tensor, Tensor, Tensor)");
}
