// The warp twin from C++: the identity grid reproduces the features, a grid far outside samples zeros, a
// half-resolution occlusion map is resized with align_corners=True.
#include <vector>

#include "check.h"
#include "mcnet_rt/warp.h"

int main() {
  using mcnet_rt::DType;
  const int c = 2, h = 3, w = 4;
  std::vector<float> features(c * h * w);
  for (size_t i = 0; i < features.size(); ++i) features[i] = static_cast<float>(i) * 0.5f - 3.0f;
  std::vector<float> identity(h * w * 2), far(h * w * 2, 3.0f), out(c * h * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      identity[(y * w + x) * 2] = -1.0f + 2.0f * x / (w - 1);
      identity[(y * w + x) * 2 + 1] = -1.0f + 2.0f * y / (h - 1);
    }
  const mcnet_rt::WarpShape plain{1, 1, c, h, w, h, w, 0, 0, true};
  MCNET_CHECK(mcnet_rt::warp_forward_cpu(DType::Float32, plain, features.data(), identity.data(), nullptr,
                                         out.data()) == 0);
  for (size_t i = 0; i < out.size(); ++i) MCNET_CHECK_NEAR(out[i], features[i], 1e-5);

  MCNET_CHECK(mcnet_rt::warp_forward_cpu(DType::Float32, plain, features.data(), far.data(), nullptr,
                                         out.data()) == 0);
  for (float v : out) MCNET_CHECK(v == 0.0f);

  // Occlusion 1 x 2 = {0, 1}: resized to width 4 with align_corners=True it ramps 0, 1/3, 2/3, 1 along x.
  const std::vector<float> occlusion{0.0f, 1.0f};
  const mcnet_rt::WarpShape occluded{1, 1, c, h, w, h, w, 1, 2, true};
  MCNET_CHECK(mcnet_rt::warp_forward_cpu(DType::Float32, occluded, features.data(), identity.data(),
                                         occlusion.data(), out.data()) == 0);
  for (int i = 0; i < c * h * w; ++i) MCNET_CHECK_NEAR(out[i], features[i] * (i % w) / 3.0f, 1e-5);

  MCNET_CHECK(mcnet_rt::warp_forward_cpu(DType::Float16, plain, features.data(), identity.data(), nullptr,
                                         out.data()) == mcnet_rt::kUnsupported);
  return 0;
}
