// Bilinear resize (align_corners=True, as F.interpolate) and bilinear grid sampling with zero padding (as
// F.grid_sample), evaluated at one output pixel, with their derivatives. Operation order follows PyTorch's CPU
// kernels so that results agree to rounding.
#pragma once

#include "mcnet_rt/detail/host_device.h"
#include "mcnet_rt/warp.h"

namespace mcnet_rt {
namespace detail {

// One axis of an align_corners=True bilinear resize: source taps i0, i0 + step and the weight of the second.
template <typename A>
struct ResizeTap {
  int i0;
  int step;
  A lambda;
};

template <typename A>
MCNET_HD ResizeTap<A> resize_tap(int dst, int in_size, int out_size) {
  const A scale = out_size > 1 ? static_cast<A>(in_size - 1) / static_cast<A>(out_size - 1) : A(0);
  const A src = scale * static_cast<A>(dst);
  const int i0 = static_cast<int>(src);
  return {i0, i0 < in_size - 1 ? 1 : 0, src - static_cast<A>(i0)};
}

// Value of the resized plane (rows x cols, row-major, `stride` between channels) at output (y, x).
template <typename A>
MCNET_HD A resize_read(const A* plane, int cols, int stride, const ResizeTap<A>& ty, const ResizeTap<A>& tx) {
  const A* r0 = plane + static_cast<long long>(ty.i0) * cols * stride;
  const A* r1 = r0 + static_cast<long long>(ty.step) * cols * stride;
  const int c0 = tx.i0 * stride, c1 = (tx.i0 + tx.step) * stride;
  const A ly1 = ty.lambda, ly0 = A(1) - ly1, lx1 = tx.lambda, lx0 = A(1) - lx1;
  return ly0 * (lx0 * r0[c0] + lx1 * r0[c1]) + ly1 * (lx0 * r1[c0] + lx1 * r1[c1]);
}

// Grid coordinate in [-1, 1] to a pixel coordinate, and its derivative.
template <typename A>
MCNET_HD A unnormalize(A coord, int size, bool align_corners) {
  return align_corners ? (coord + A(1)) / A(2) * static_cast<A>(size - 1)
                       : ((coord + A(1)) * static_cast<A>(size) - A(1)) / A(2);
}

template <typename A>
MCNET_HD A unnormalize_slope(int size, bool align_corners) {
  return align_corners ? static_cast<A>(size - 1) / A(2) : static_cast<A>(size) / A(2);
}

// The four taps of a zero-padded bilinear sample at pixel coordinate (ix, iy): corner offsets in the plane
// (-1 when outside) and weights nw, ne, sw, se.
template <typename A>
struct SampleTaps {
  int x0, y0;
  A ix, iy;
  long long offset[4];
  A weight[4];
};

template <typename A>
MCNET_HD SampleTaps<A> sample_taps(A ix, A iy, int height, int width) {
  SampleTaps<A> t;
  // Far-away or non-finite coordinates sample only padding; clamping keeps the int conversion defined.
  const A limit = A(1) * static_cast<A>(height > width ? height : width) + A(2);
  if (!(ix > -limit && ix < limit && iy > -limit && iy < limit)) {
    ix = -limit;
    iy = -limit;
  }
  t.ix = ix;
  t.iy = iy;
  const A fx = std::floor(ix), fy = std::floor(iy);
  t.x0 = static_cast<int>(fx);
  t.y0 = static_cast<int>(fy);
  const A e = ix - fx, w = fx + A(1) - ix, s = iy - fy, n = fy + A(1) - iy;
  t.weight[0] = w * n;
  t.weight[1] = e * n;
  t.weight[2] = w * s;
  t.weight[3] = e * s;
  for (int k = 0; k < 4; ++k) {
    const int x = t.x0 + (k & 1), y = t.y0 + (k >> 1);
    t.offset[k] = (x >= 0 && x < width && y >= 0 && y < height) ? static_cast<long long>(y) * width + x : -1;
  }
  return t;
}

// d(sample)/d(ix) and d(sample)/d(iy) given the four corner values (zero when outside).
template <typename A>
MCNET_HD void sample_slopes(const SampleTaps<A>& t, const A v[4], A* d_ix, A* d_iy) {
  const A e = t.ix - static_cast<A>(t.x0), w = A(1) - e, s = t.iy - static_cast<A>(t.y0), n = A(1) - s;
  *d_ix = (v[1] - v[0]) * n + (v[3] - v[2]) * s;
  *d_iy = (v[2] - v[0]) * w + (v[3] - v[1]) * e;
}

// Adds `value` into the resize taps of an align_corners=True resize (the adjoint of resize_read).
template <typename A, typename Add>
MCNET_HD void resize_scatter(A* plane, int cols, int stride, const ResizeTap<A>& ty, const ResizeTap<A>& tx,
                             A value, Add add) {
  A* r0 = plane + static_cast<long long>(ty.i0) * cols * stride;
  A* r1 = r0 + static_cast<long long>(ty.step) * cols * stride;
  const int c0 = tx.i0 * stride, c1 = (tx.i0 + tx.step) * stride;
  const A ly1 = ty.lambda, ly0 = A(1) - ly1, lx1 = tx.lambda, lx0 = A(1) - lx1;
  add(r0 + c0, ly0 * lx0 * value);
  add(r0 + c1, ly0 * lx1 * value);
  add(r1 + c0, ly1 * lx0 * value);
  add(r1 + c1, ly1 * lx1 * value);
}

// Where output pixel (y, x) of sample n samples from, and its occlusion weight.
template <typename A>
struct WarpPoint {
  ResizeTap<A> gy, gx, oy, ox;
  SampleTaps<A> taps;
  A occlusion;
};

template <typename A>
MCNET_HD WarpPoint<A> warp_point(const WarpShape& s, long long n, int y, int x, const A* deformation,
                                 const A* occlusion) {
  WarpPoint<A> p;
  p.gy = resize_tap<A>(y, s.grid_h, s.height);
  p.gx = resize_tap<A>(x, s.grid_w, s.width);
  const A* d = deformation + n * s.grid_h * s.grid_w * 2;
  const A gx = resize_read(d, s.grid_w, 2, p.gy, p.gx);
  const A gy = resize_read(d + 1, s.grid_w, 2, p.gy, p.gx);
  p.taps = sample_taps(unnormalize(gx, s.width, s.align_corners), unnormalize(gy, s.height, s.align_corners),
                       s.height, s.width);
  p.occlusion = A(1);
  if (occlusion != nullptr) {
    p.oy = resize_tap<A>(y, s.occ_h, s.height);
    p.ox = resize_tap<A>(x, s.occ_w, s.width);
    p.occlusion = resize_read(occlusion + n * s.occ_h * s.occ_w, s.occ_w, 1, p.oy, p.ox);
  }
  return p;
}

// Channels handled per work item: a pixel's geometry is computed once per chunk, and wide maps with few pixels
// (512 channels at 32×32) still spread over many CUDA threads.
constexpr int kWarpChannelChunk = 32;

MCNET_HD int warp_channel_chunks(int channels) { return (channels + kWarpChannelChunk - 1) / kWarpChannelChunk; }

// One work item: output sample n, channel chunk, pixel (y, x). Items are numbered with the pixel fastest, so
// consecutive CUDA threads read and write consecutive pixels.
struct WarpItem {
  long long n;
  int chunk, y, x;
};

MCNET_HD long long warp_items(const WarpShape& s) {
  return static_cast<long long>(s.batch) * s.grids * warp_channel_chunks(s.channels) * s.height * s.width;
}

MCNET_HD WarpItem warp_item(const WarpShape& s, long long i) {
  const long long pixels = static_cast<long long>(s.height) * s.width;
  const long long item = i / pixels;
  const int p = static_cast<int>(i - item * pixels);
  const int chunks = warp_channel_chunks(s.channels);
  return {item / chunks, static_cast<int>(item % chunks), p / s.width, p % s.width};
}

template <typename T, typename A>
MCNET_HD void warp_forward_item(const WarpShape& s, const WarpItem& item, const T* features, const A* deformation,
                                const A* occlusion, T* out) {
  const long long n = item.n;
  const WarpPoint<A> p = warp_point(s, n, item.y, item.x, deformation, occlusion);
  const long long plane = static_cast<long long>(s.height) * s.width;
  const int c0 = item.chunk * kWarpChannelChunk;
  const int c1 = c0 + kWarpChannelChunk < s.channels ? c0 + kWarpChannelChunk : s.channels;
  const T* f = features + ((n / s.grids) * s.channels + c0) * plane;
  T* o = out + (n * s.channels + c0) * plane + static_cast<long long>(item.y) * s.width + item.x;
  for (int c = c0; c < c1; ++c, f += plane, o += plane) {
    A value = A(0);
    for (int k = 0; k < 4; ++k) {
      if (p.taps.offset[k] >= 0) value += p.taps.weight[k] * static_cast<A>(f[p.taps.offset[k]]);
    }
    *o = static_cast<T>(value * p.occlusion);
  }
}

// Gradients of one output pixel over one channel chunk: scattered into the features (through the sample taps)
// and, as partial sums over the chunk, into the low-resolution deformation and occlusion (through the resize
// taps) with `add`.
template <typename T, typename A, typename Add>
MCNET_HD void warp_backward_item(const WarpShape& s, const WarpItem& item, const T* features, const A* deformation,
                                 const A* occlusion, const T* grad_out, A* grad_features, A* grad_deformation,
                                 A* grad_occlusion, Add add) {
  const long long n = item.n;
  const WarpPoint<A> p = warp_point(s, n, item.y, item.x, deformation, occlusion);
  const long long plane = static_cast<long long>(s.height) * s.width;
  const int c0 = item.chunk * kWarpChannelChunk;
  const int c1 = c0 + kWarpChannelChunk < s.channels ? c0 + kWarpChannelChunk : s.channels;
  const long long feature_offset = (n / s.grids) * s.channels * plane;
  const T* f = features + feature_offset + c0 * plane;
  const T* g = grad_out + (n * s.channels + c0) * plane + static_cast<long long>(item.y) * s.width + item.x;
  A grad_ix = A(0), grad_iy = A(0), grad_occ = A(0);
  for (int c = c0; c < c1; ++c, f += plane, g += plane) {
    const A go = static_cast<A>(*g);
    const A gv = go * p.occlusion;
    A v[4];
    A value = A(0);
    for (int k = 0; k < 4; ++k) {
      v[k] = p.taps.offset[k] >= 0 ? static_cast<A>(f[p.taps.offset[k]]) : A(0);
      value += p.taps.weight[k] * v[k];
      if (grad_features != nullptr && p.taps.offset[k] >= 0) {
        add(grad_features + feature_offset + c * plane + p.taps.offset[k], gv * p.taps.weight[k]);
      }
    }
    grad_occ += go * value;
    A d_ix, d_iy;
    sample_slopes(p.taps, v, &d_ix, &d_iy);
    grad_ix += gv * d_ix;
    grad_iy += gv * d_iy;
  }
  if (grad_deformation != nullptr) {
    A* d = grad_deformation + n * s.grid_h * s.grid_w * 2;
    resize_scatter(d, s.grid_w, 2, p.gy, p.gx, grad_ix * unnormalize_slope<A>(s.width, s.align_corners), add);
    resize_scatter(d + 1, s.grid_w, 2, p.gy, p.gx, grad_iy * unnormalize_slope<A>(s.height, s.align_corners),
                   add);
  }
  if (grad_occlusion != nullptr && occlusion != nullptr) {
    resize_scatter(grad_occlusion + n * s.occ_h * s.occ_w, s.occ_w, 1, p.oy, p.ox, grad_occ, add);
  }
}

}  // namespace detail
}  // namespace mcnet_rt
