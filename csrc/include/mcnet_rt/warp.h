// Warp op family: bilinear grid sampling of a feature map by a (possibly lower-resolution) deformation grid,
// times a (possibly lower-resolution) occlusion map, in one pass.
//
// Output sample n = b*grids + g (b < batch, g < grids) reads feature map b at output pixel (y, x):
//   grid  = bilinear resize (align_corners=True) of deformation n (grid_h x grid_w x 2, x then y in [-1,1]) to
//           height x width, evaluated at (y, x) without materialising the resized grid;
//   value = grid_sample(features[b], grid, bilinear, zero padding, align_corners);
//   out   = value * resize(occlusion n) at (y, x), when an occlusion map (occ_h x occ_w) is given.
// grids = 1 is the generator's per-scale warp; grids = K+1 (grid at full size, no occlusion,
// align_corners=false) is the dense-motion network's sparse warps.
#pragma once

#include "mcnet_rt/common.h"

namespace mcnet_rt {

struct WarpShape {
  int batch;      // feature maps
  int grids;      // deformation grids per feature map
  int channels;
  int height, width;          // of the features and the output
  int grid_h, grid_w;         // of the deformation
  int occ_h, occ_w;           // of the occlusion map; 0 x 0 when there is none
  bool align_corners;         // of the grid sample (the resizes always use align_corners=True)
};

// features (batch, C, H, W) and out (batch*grids, C, H, W) of `dtype`; deformation (batch*grids, gh, gw, 2) and
// occlusion (batch*grids, 1, oh, ow) float32 (float64 for the Float64 CPU twin); all contiguous.
int warp_forward_cuda(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                      const void* occlusion, void* out, Stream stream);
int warp_forward_cpu(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                     const void* occlusion, void* out);

// grad_out of `dtype`. Gradients are accumulated in float32 (float64 for the Float64 twin) into zeroed buffers:
// grad_features (batch, C, H, W), grad_deformation like deformation, grad_occlusion like occlusion; any of them
// may be null when not needed.
int warp_backward_cuda(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                       const void* occlusion, const void* grad_out, void* grad_features, void* grad_deformation,
                       void* grad_occlusion, Stream stream);
int warp_backward_cpu(DType dtype, const WarpShape& s, const void* features, const void* deformation,
                      const void* occlusion, const void* grad_out, void* grad_features, void* grad_deformation,
                      void* grad_occlusion);

}  // namespace mcnet_rt
