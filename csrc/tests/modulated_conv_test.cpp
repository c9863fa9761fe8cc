// The modulated-conv twin from C++, by identities that need no reference implementation: the transposed conv is
// the adjoint of the conv (<conv(x), y> = <x, convT(y)>), the weight gradient is the derivative of <conv(x), y>
// in the per-sample kernel, a single centre tap is a per-pixel matrix product, and the demodulation normalises.
#include <cmath>
#include <vector>

#include "check.h"
#include "mcnet_rt/modulated_conv.h"

namespace {

std::vector<double> values(size_t n, double seed) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(seed + 1.7 * static_cast<double>(i));
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

int main() {
  using mcnet_rt::DType;
  const int batch = 2, c_in = 3, c_out = 5, h = 4, w = 3, experts = 2;
  const mcnet_rt::PerSampleConvShape s{batch, c_in, c_out, h, w, experts, c_in * h * w};
  const auto x = values(batch * c_in * h * w, 0.1), y = values(batch * c_out * h * w, 0.2);
  const auto weight = values(experts * c_out * c_in * 9, 0.3), mix = values(batch * experts, 0.4);
  const auto in_scale = values(batch * c_in, 0.5), out_scale = values(batch * c_out, 0.6);

  std::vector<double> out(y.size()), back(x.size());
  MCNET_CHECK(mcnet_rt::persample_conv2d_cpu(DType::Float64, s, false, x.data(), weight.data(), mix.data(),
                                             in_scale.data(), out_scale.data(), nullptr, out.data()) == 0);
  const mcnet_rt::PerSampleConvShape transposed{batch, c_in, c_out, h, w, experts, c_out * h * w};
  MCNET_CHECK(mcnet_rt::persample_conv2d_cpu(DType::Float64, transposed, true, y.data(), weight.data(), mix.data(),
                                             in_scale.data(), out_scale.data(), nullptr, back.data()) == 0);
  MCNET_CHECK_NEAR(dot(out, y), dot(x, back), 1e-10);

  // <conv(x), y> is linear in each sample's kernel w_b: Σ_b Σ w_b · G_b reproduces it.
  const mcnet_rt::PerSampleConvShape single{batch, c_in, c_out, h, w, 1, c_in * h * w};
  std::vector<double> grad(batch * c_out * c_in * 9), plain(y.size());
  MCNET_CHECK(mcnet_rt::persample_conv2d_weight_grad_cpu(DType::Float64, single, x.data(), y.data(),
                                                         grad.data()) == 0);
  MCNET_CHECK(mcnet_rt::persample_conv2d_cpu(DType::Float64, single, false, x.data(), weight.data(), nullptr,
                                             nullptr, nullptr, nullptr, plain.data()) == 0);
  double linear = 0;
  for (int b = 0; b < batch; ++b)
    for (size_t e = 0; e < weight.size() / experts; ++e) linear += weight[e] * grad[b * weight.size() / experts + e];
  MCNET_CHECK_NEAR(linear, dot(plain, y), 1e-10);

  // Only the centre tap, a bias, a shared input (batch stride 0): out[b,o,p] = Σ_i W[o,i]·x[i,p] + bias[b,o].
  std::vector<double> centre(c_out * c_in * 9, 0.0), bias = values(batch * c_out, 0.7);
  for (int o = 0; o < c_out; ++o)
    for (int i = 0; i < c_in; ++i) centre[(o * c_in + i) * 9 + 4] = weight[o * c_in + i];
  const mcnet_rt::PerSampleConvShape shared{batch, c_in, c_out, h, w, 1, 0};
  MCNET_CHECK(mcnet_rt::persample_conv2d_cpu(DType::Float64, shared, false, x.data(), centre.data(), nullptr,
                                             nullptr, nullptr, bias.data(), out.data()) == 0);
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < c_out; ++o)
      for (int p = 0; p < h * w; ++p) {
        double expected = bias[b * c_out + o];
        for (int i = 0; i < c_in; ++i) expected += weight[o * c_in + i] * x[i * h * w + p];
        MCNET_CHECK_NEAR(out[(b * c_out + o) * h * w + p], expected, 1e-12);
      }

  // Demodulated kernels have unit norm per output channel; all-zero styles give rsqrt(eps).
  const mcnet_rt::DemodulationShape ds{batch, c_in, c_out, 9};
  std::vector<double> styles = values(batch * c_in, 0.8), demod(batch * c_out);
  for (int i = 0; i < c_in; ++i) styles[c_in + i] = 0.0;
  MCNET_CHECK(mcnet_rt::demodulation_forward_cpu(DType::Float64, ds, weight.data(), styles.data(), 1e-8,
                                                 demod.data()) == 0);
  for (int o = 0; o < c_out; ++o) {
    double norm = 0;
    for (int i = 0; i < c_in; ++i)
      for (int t = 0; t < 9; ++t) norm += std::pow(weight[(o * c_in + i) * 9 + t] * styles[i] * demod[o], 2);
    MCNET_CHECK_NEAR(norm, 1.0, 1e-6);
    MCNET_CHECK_NEAR(demod[c_out + o], 1e4, 1e-6);
  }

  MCNET_CHECK(mcnet_rt::persample_conv2d_cpu(DType::Float16, s, false, x.data(), weight.data(), nullptr, nullptr,
                                             nullptr, nullptr, out.data()) == mcnet_rt::kUnsupported);
  return 0;
}
