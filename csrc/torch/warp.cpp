// mcnet_rt::warp_features, sparse_warp (public; and their `_into` forms) and warp, warp_backward (private) over the
// launchers of mcnet_rt/warp.h. The rules are those of mcnet_rt/ops/warp.py's fakes.
#include "mcnet_rt/warp.h"

#include <tuple>

#include "op_support.h"

namespace mcnet_rt::ops {
namespace {

void check_warp(const char* op, const Tensor& features, const Tensor& deformation,
                const std::optional<Tensor>& occlusion, int64_t grids) {
  check(grids >= 1, std::string(op) + ": grids must be at least 1, not " + std::to_string(grids));
  const Device device = features.device();
  check_tensor(op, "features", features, kernel_dtypes(device), device, 4);
  const Dtypes acc{accumulation_dtype(features.scalar_type())};
  check_tensor(op, "deformation", deformation, acc, device, 4);
  check_size(op, "deformation", deformation, 0, features.size(0) * grids, "batch × grids of features");
  check_size(op, "deformation", deformation, 3, 2, "x and y");
  if (occlusion) {
    check_tensor(op, "occlusion", *occlusion, acc, device, 4);
    check_size(op, "occlusion", *occlusion, 0, deformation.size(0), "the grids of deformation");
    check_size(op, "occlusion", *occlusion, 1, 1, "one channel");
  }
}

WarpShape warp_shape(const Tensor& features, const Tensor& deformation, const std::optional<Tensor>& occlusion,
                     int64_t grids, bool align_corners) {
  return {int(features.size(0)), int(grids),         int(features.size(1)),
          int(features.size(2)), int(features.size(3)), int(deformation.size(1)),
          int(deformation.size(2)), occlusion ? int(occlusion->size(2)) : 0,
          occlusion ? int(occlusion->size(3)) : 0,      align_corners};
}

// The forward launch into `out` (batch·grids, C, H, W) of any shape with those elements.
void launch_warp(const char* op, const Tensor& features, const Tensor& deformation,
                 const std::optional<Tensor>& occlusion, int64_t grids, bool align_corners, const Tensor& out) {
  const WarpShape s = warp_shape(features, deformation, occlusion, grids, align_corners);
  const DType t = dtype_code(features.scalar_type());
  run(op, features, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(warp_forward_cuda(t, s, features.data_ptr(), deformation.data_ptr(),
                                                       data(occlusion), out.data_ptr(), stream))
                : warp_forward_cpu(t, s, features.data_ptr(), deformation.data_ptr(), data(occlusion),
                                   out.data_ptr());
  });
}

Tensor warp(Tensor features, Tensor deformation, std::optional<Tensor> occlusion, int64_t grids,
            bool align_corners) {
  check_warp("warp", features, deformation, occlusion, grids);
  Tensor out = torch::stable::new_empty(
      features, {features.size(0) * grids, features.size(1), features.size(2), features.size(3)});
  launch_warp("warp", features, deformation, occlusion, grids, align_corners, out);
  return out;
}

std::tuple<Tensor, Tensor, Tensor> warp_backward(Tensor grad_out, Tensor features, Tensor deformation,
                                                 std::optional<Tensor> occlusion, int64_t grids,
                                                 bool align_corners) {
  const char* op = "warp_backward";
  check_warp(op, features, deformation, occlusion, grids);
  check(grad_out.scalar_type() == features.scalar_type() && grad_out.device() == features.device() &&
            grad_out.dim() == 4,
        std::string(op) + ": grad_out (" + name(grad_out.scalar_type()) + ", " + name(grad_out.device()) +
            ") must match features");
  check(grad_out.size(0) == features.size(0) * grids && grad_out.size(1) == features.size(1) &&
            grad_out.size(2) == features.size(2) && grad_out.size(3) == features.size(3),
        std::string(op) + ": grad_out has shape " + shape(grad_out) + ", the output's is (batch × grids, C, H, W)");
  grad_out = torch::stable::contiguous(grad_out);
  const ScalarType acc = accumulation_dtype(features.scalar_type());
  Tensor grad_features = torch::stable::new_zeros(features, {features.size(0), features.size(1), features.size(2),
                                                             features.size(3)}, acc);
  Tensor grad_deformation = torch::stable::new_zeros(deformation, {deformation.size(0), deformation.size(1),
                                                                   deformation.size(2), deformation.size(3)});
  Tensor grad_occlusion =
      occlusion ? torch::stable::new_zeros(*occlusion, {occlusion->size(0), 1, occlusion->size(2), occlusion->size(3)})
                : torch::stable::new_empty(deformation, {0});
  void* grad_occlusion_data = occlusion ? grad_occlusion.data_ptr() : nullptr;
  const WarpShape s = warp_shape(features, deformation, occlusion, grids, align_corners);
  const DType t = dtype_code(features.scalar_type());
  run(op, features, [&](bool cuda, Stream stream) {
    return cuda ? MCNET_RT_CUDA_CALL(warp_backward_cuda(t, s, features.data_ptr(), deformation.data_ptr(),
                                                        data(occlusion), grad_out.data_ptr(),
                                                        grad_features.data_ptr(), grad_deformation.data_ptr(),
                                                        grad_occlusion_data, stream))
                : warp_backward_cpu(t, s, features.data_ptr(), deformation.data_ptr(), data(occlusion),
                                    grad_out.data_ptr(), grad_features.data_ptr(), grad_deformation.data_ptr(),
                                    grad_occlusion_data);
  });
  return {grad_features, grad_deformation, grad_occlusion};
}

void warp_features_into(Tensor features, Tensor deformation, std::optional<Tensor> occlusion, Tensor out) {
  const char* op = "warp_features_into";
  check_warp(op, features, deformation, occlusion, 1);
  check_out(op, out, features, {features.size(0), features.size(1), features.size(2), features.size(3)});
  launch_warp(op, features, deformation, occlusion, 1, true, out);
}

Tensor warp_features(Tensor features, Tensor deformation, std::optional<Tensor> occlusion) {
  check_warp("warp_features", features, deformation, occlusion, 1);
  Tensor out = torch::stable::empty_like(features);
  launch_warp("warp_features", features, deformation, occlusion, 1, true, out);
  return out;
}

// Checks sparse_warp's operands; returns the K+1 grids of a sample as consecutive deformations
// (batch·grids, H, W, 2) of the packed motions.
Tensor sparse_deformation(const char* op, const Tensor& image, const Tensor& motions) {
  const Device device = image.device();
  check_tensor(op, "image", image, kernel_dtypes(device), device, 4);
  check_tensor(op, "motions", motions, {accumulation_dtype(image.scalar_type())}, device, 5);
  check_size(op, "motions", motions, 0, image.size(0), "the batch of image");
  check_size(op, "motions", motions, 2, image.size(2), "the height of image");
  check_size(op, "motions", motions, 3, image.size(3), "the width of image");
  check_size(op, "motions", motions, 4, 2, "x and y");
  return torch::stable::view(motions, {image.size(0) * motions.size(1), image.size(2), image.size(3), 2});
}

std::vector<int64_t> sparse_warp_sizes(const Tensor& image, const Tensor& motions) {
  return {image.size(0), motions.size(1), image.size(1), image.size(2), image.size(3)};
}

void sparse_warp_into(Tensor image, Tensor motions, Tensor out) {
  const char* op = "sparse_warp_into";
  const Tensor deformation = sparse_deformation(op, image, motions);
  check_out(op, out, image, sparse_warp_sizes(image, motions));
  launch_warp(op, image, deformation, std::nullopt, motions.size(1), false, out);
}

Tensor sparse_warp(Tensor image, Tensor motions) {
  const char* op = "sparse_warp";
  const Tensor deformation = sparse_deformation(op, image, motions);
  Tensor out = torch::stable::new_empty(image, sparse_warp_sizes(image, motions));
  launch_warp(op, image, deformation, std::nullopt, motions.size(1), false, out);
  return out;
}

}  // namespace

void register_warp(Library& m) {
  m.impl("warp", TORCH_BOX(&warp));
  m.impl("warp_backward", TORCH_BOX(&warp_backward));
  m.impl("warp_features", TORCH_BOX(&warp_features));
  m.impl("sparse_warp", TORCH_BOX(&sparse_warp));
  m.impl("warp_features_into", TORCH_BOX(&warp_features_into));
  m.impl("sparse_warp_into", TORCH_BOX(&sparse_warp_into));
}

}  // namespace mcnet_rt::ops

MCNET_RT_REGISTER_IMPLS(mcnet_rt::ops::register_warp)
