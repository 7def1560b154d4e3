// Fused depthwise conv + inference BatchNorm + ReLU6 (forward) and its input gradient, as XLA FFI
// handlers for the CPU: the native-kernel experiment of benchmarks/native_depthwise.py (not part of jaxviz).
#include <algorithm>
#include <cstdint>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// x [N,H,W,C], k [K,K,C], mult/shift [C] -> y [N,Ho,Wo,C] = relu6((dw(x,k)) * mult + shift)
static ffi::Error DwFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> mult,
                            ffi::Buffer<ffi::F32> shift, ffi::ResultBuffer<ffi::F32> y, int64_t stride,
                            int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions();
  auto yd = y->dimensions();
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t Ho = yd[1], Wo = yd[2];
  const int64_t K = k.dimensions()[0];
  const float* __restrict xp = x.typed_data();
  const float* __restrict kp = k.typed_data();
  const float* __restrict mp = mult.typed_data();
  const float* __restrict sp = shift.typed_data();
  float* __restrict yp = y->typed_data();
  float acc[4096];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        for (int64_t c = 0; c < C; ++c) acc[c] = 0.f;
        for (int64_t i = 0; i < K; ++i) {
          int64_t h = oh * stride + i - pad_top;
          if (h < 0 || h >= H) continue;
          for (int64_t j = 0; j < K; ++j) {
            int64_t w = ow * stride + j - pad_left;
            if (w < 0 || w >= W) continue;
            const float* xr = xp + ((n * H + h) * W + w) * C;
            const float* kr = kp + (i * K + j) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += xr[c] * kr[c];
          }
        }
        float* yr = yp + ((n * Ho + oh) * Wo + ow) * C;
        for (int64_t c = 0; c < C; ++c) yr[c] = std::min(std::max(acc[c] * mp[c] + sp[c], 0.f), 6.f);
      }
  return ffi::Error::Success();
}

// gy, y [N,Ho,Wo,C], k, mult -> dx [N,H,W,C]: each input pixel gathers the masked gradients of the
// outputs whose taps cover it (a scatter from the outputs measured 2x slower)
static ffi::Error DwBwdImpl(ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> mult, ffi::ResultBuffer<ffi::F32> dx, int64_t stride,
                            int64_t pad_top, int64_t pad_left) {
  auto gd = gy.dimensions();
  auto xd = dx->dimensions();
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t Ho = gd[1], Wo = gd[2];
  const int64_t K = k.dimensions()[0];
  const float* __restrict gp = gy.typed_data();
  const float* __restrict yp = y.typed_data();
  const float* __restrict kp = k.typed_data();
  const float* __restrict mp = mult.typed_data();
  float* __restrict dp = dx->typed_data();
  float acc[4096];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t c = 0; c < C; ++c) acc[c] = 0.f;
        for (int64_t i = 0; i < K; ++i) {
          int64_t t = h + pad_top - i;
          if (t < 0 || t % stride) continue;
          int64_t oh = t / stride;
          if (oh >= Ho) continue;
          for (int64_t j = 0; j < K; ++j) {
            int64_t u = w + pad_left - j;
            if (u < 0 || u % stride) continue;
            int64_t ow = u / stride;
            if (ow >= Wo) continue;
            int64_t o = ((n * Ho + oh) * Wo + ow) * C;
            const float* __restrict gr = gp + o;
            const float* __restrict yr = yp + o;
            const float* __restrict kr = kp + (i * K + j) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += ((yr[c] > 0.f && yr[c] < 6.f) ? gr[c] : 0.f) * kr[c];
          }
        }
        float* __restrict dr = dp + ((n * H + h) * W + w) * C;
        for (int64_t c = 0; c < C; ++c) dr[c] = acc[c] * mp[c];
      }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(DwFwd, DwFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DwBwd, DwBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
