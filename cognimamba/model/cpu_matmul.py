"""A few rows times a weight on CPU at memory speed: the products of decoding steps, one stream or a batch of slots.

A decoding step multiplies one row per stream by every weight, so its time is the time to stream the weights.
PyTorch's CPU products fall short of that in these cases (benchmarks/RESULTS.md, issue 29):
- bf16 weights, one row: oneDNN's GEMM through F.linear and `torch.mv` stream 8-12 GB/s on two cores, less than
  fp32 products stream from the same memory. Tried and no better for one row: oneDNN on packed weights,
  Inductor's C++ GEMM templates and reductions.
- a batch of slots (2 to 16 rows), fp32 or bf16: MKL's and oneDNN's GEMMs for so few rows cost about twice one
  row's time at 8 rows, where the weights streamed once would cost about the same.
For bf16 from three rows on, oneDNN's own GEMM does stream at memory speed once its weights are packed for it
ahead of time (`pack_bf16`, `packed_bf16`: 3.8 against 5.9 ms for the 4gb shape's products at 8 rows, and
faster prompts too); PyTorch packs them this way only inside Inductor's freezing pass. The rest is a dozen lines
of AVX-512 per format: eight weight rows are read once against every input row (fp32 FMAs, or AVX512-BF16's
VDPBF16PS: bf16 products summed in fp32), the next block prefetched, the blocks split across torch's threads.
int8 weights (`--weights int8`, per-row scales) are a third case: PyTorch either dequantizes the whole weight
on every call or rounds the rows to bf16 for `_weight_int8pack_mm` (native bf16 only). Their kernel runs as
llama.cpp's q8_0 products do: each input row rounded to int8 in blocks of 32 (`q8_rounded` says how), each
block's byte products summed exactly in integers (AVX2's VPMADDUBSW, on every host), then scaled in fp32. That
is half the instructions of widening each weight to fp32 for FMAs, which it replaced: the 4gb shape's products of
8 rows took 1.2-1.4x less time, and a `cpu`-profile step's 1.2-1.3x (benchmarks/RESULTS.md); one row of the 4gb
shape, bound by memory, about the same. On AMD processors it takes prompts too (INT8_MAX_ROWS).
- fp32 on AMD processors, where MKL runs its generic code: one row through MKL streams 10-15 GB/s where the kernel
  streams 18-23 (FP32_EVERY_ROW); the kernel has an AVX2 form for those without AVX-512.

It is compiled on first use with torch's own C++ extension builder (a C++ compiler and ninja; about half a minute,
cached after). Where that fails, or the CPU lacks AVX-512 (for fp32 and int8: AVX2), `applies()`,
`applies_int8()` and `packs_bf16()` say no and the caller keeps its PyTorch product. The ops' schemas and fake
kernels are defined here, so torch.compile traces through them; their CPU kernels are registered by the C++ library.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from cognimamba.system.hardware import cpu_has_flag, mkl_takes_generic_path

log = logging.getLogger("cognimamba.model")

# Every kernel runs with AVX-512 (Intel Skylake-SP on, AMD Zen 4 on); with AVX2 alone, the fp32 and int8 ones. A
# constant, so that torch.compile's tracing of `applies` reads a bool (it would break its graph on a cached function).
AVX512 = cpu_has_flag("avx512f")
# Input rows the kernel takes, where it beat PyTorch's product (benchmarks/RESULTS.md, issue 29):
# - fp32 with AVX-512 on Intel (where MKL runs its own kernels): from 4 rows (below, MKL's F.linear or x @ the
#   decoding copy is as fast) to 8 (at 16 MKL's GEMM is faster), and only weights of FP32_MIN_ELEMENTS or more: on
#   the `cpu` profile's (256 x 688 at most) MKL was faster at every number of rows.
# - fp32 on AMD (where MKL takes its generic path), with AVX-512 or AVX2 alone: every weight, 1 to 16 rows. Zen 3
#   (AVX2): the 4gb shape's products 8.5-9.3 against 11.8-14.1 ms for one row, 15.9-16.2 against 25.6-32.4 ms for
#   8; Zen 4 (AVX-512): 8.5 against 13.0 ms (x @ the decoding copy) for one row, 12.8 against 19.1 (F.linear) for 8,
#   22.4 against 25.7 for 16, and the `cpu` shape's 0.63 against 1.15 ms for one row (few_rows.py).
# - fp32 with AVX2 alone on Intel: not measured, so MKL keeps it.
# - bf16 one or two rows (from 3, oneDNN's GEMM on weights packed for it once, `pack_bf16`, is faster).
FP32_EVERY_ROW = mkl_takes_generic_path() and (AVX512 or cpu_has_flag("avx2"))
# An AMD CPU with AVX2 alone: MKL's AVX2 code is as wide as oneDNN's there (model/linear.use_onednn)
AVX2_ONLY_AMD = FP32_EVERY_ROW and not AVX512
FP32_ON = AVX512 or FP32_EVERY_ROW
FP32_ROWS = (1, 16) if FP32_EVERY_ROW else (4, 8)  # fewest and most, inclusive
FP32_MIN_ELEMENTS = 0 if FP32_EVERY_ROW else 1 << 19  # the 4gb shape's smallest, 768 x 768, is 589,824
BF16_ROWS = (1, 2)
INT8_ROWS = (1, 16)  # int8 weights, fp32 rows: PyTorch's int8 products dequantize first or round rows to bf16
# Where MKL takes its generic path (AMD), prompts too: there the int8 kernel beat the dequantized weight's GEMM,
# which pays for widening every weight before it multiplies (benchmarks/RESULTS.md, issue 29's eleventh and twelfth
# passes). Zen 3 (AVX2): 4gb shape, 32 to 256 ids, 1.9x to 1.07x; `cpu` shape, 64 and 256, 1.2x. Zen 4 (AVX-512,
# where the GEMM is oneDNN's): 4gb shape, 32 to 256 ids, 1.85x to 1.11x; `cpu` shape, 1.25x to 256 ids, then even.
INT8_MAX_ROWS = 1 << 30 if FP32_EVERY_ROW else INT8_ROWS[1]
Q8_BLOCK = 32  # values of a row the int8 kernel rounds with one scale (SOURCE's QB), as llama.cpp's q8_0
# The rows oneDNN packs a bf16 weight for (its blocked layout depends on it). Packed for 16 rather than 1, the 4gb
# shape's compiled step of 8 slots took 11.9 against 15.0 ms and an 80-id prompt 22.6 against 30.4 (medians of 8
# turns; 8 rows were as good as 16); the layout for 1 row is no faster for few rows either.
PACK_ROWS = 16
STALE_LOCK_SECONDS = 600  # a build takes under two minutes on two cores
SOURCE = r"""
#include <torch/extension.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <type_traits>
#include <vector>

constexpr int64_t R = 8;  // weight rows a block reads at once
constexpr int64_t C = 2;  // input rows each pass over a block multiplies; the block stays in cache for the next pass

// out[c * N + r] = sum_k w[r * K + k] * x[c * K + k] for RN weight rows and CN input rows, fp32 sums.
template <int RN, int CN>
__attribute__((target("avx512f"))) static void tile_f32(const float* w, const float* x, float* out, int64_t K,
                                                       int64_t N) {
  __m512 acc[RN][CN];
  for (int r = 0; r < RN; ++r) for (int c = 0; c < CN; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 ws[RN];
    for (int r = 0; r < RN; ++r) {
      _mm_prefetch((const char*)(w + (r + RN) * K + k), _MM_HINT_T0);  // the next block, same columns
      ws[r] = _mm512_loadu_ps(w + r * K + k);
    }
    for (int c = 0; c < CN; ++c) {
      __m512 xs = _mm512_loadu_ps(x + c * K + k);
      for (int r = 0; r < RN; ++r) acc[r][c] = _mm512_fmadd_ps(ws[r], xs, acc[r][c]);
    }
  }
  if (k < K) {
    __mmask16 left = (__mmask16)((1u << (K - k)) - 1);
    for (int c = 0; c < CN; ++c) {
      __m512 xs = _mm512_maskz_loadu_ps(left, x + c * K + k);
      for (int r = 0; r < RN; ++r)
        acc[r][c] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(left, w + r * K + k), xs, acc[r][c]);
    }
  }
  for (int r = 0; r < RN; ++r) for (int c = 0; c < CN; ++c) out[c * N + r] = _mm512_reduce_add_ps(acc[r][c]);
}

// The same for bf16 weights and rows: VDPBF16PS sums pairs of bf16 products in fp32; the last block of a K that is
// not a multiple of 32 (the `cpu` profile's 688) is loaded masked, its missing values zero. The sums are rounded to
// bf16 here (to nearest, ties to even, as a conversion of the fp32 result would), not in a pass of their own.
template <int RN, int CN>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void tile_bf16(const uint16_t* w, const uint16_t* x,
                                                                            at::BFloat16* out, int64_t K,
                                                                            int64_t N) {
  __m512 acc[RN][CN];
  for (int r = 0; r < RN; ++r) for (int c = 0; c < CN; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh ws[RN];
    for (int r = 0; r < RN; ++r) {
      _mm_prefetch((const char*)(w + (r + RN) * K + k), _MM_HINT_T0);
      ws[r] = (__m512bh)_mm512_loadu_si512(w + r * K + k);
    }
    for (int c = 0; c < CN; ++c) {
      __m512bh xs = (__m512bh)_mm512_loadu_si512(x + c * K + k);
      for (int r = 0; r < RN; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], ws[r], xs);
    }
  }
  if (k < K) {
    __mmask32 left = (__mmask32)((1ull << (K - k)) - 1);
    for (int c = 0; c < CN; ++c) {
      __m512bh xs = (__m512bh)_mm512_maskz_loadu_epi16(left, x + c * K + k);
      for (int r = 0; r < RN; ++r)
        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)_mm512_maskz_loadu_epi16(left, w + r * K + k), xs);
    }
  }
  for (int r = 0; r < RN; ++r)
    for (int c = 0; c < CN; ++c) out[c * N + r] = at::BFloat16(_mm512_reduce_add_ps(acc[r][c]));
}

// AVX2 (CPUs without AVX-512: AMD Zen 1-3, most laptops), fp32 or bf16 weights and fp32 rows: 8 lanes, and 16
// registers, so the RN rows go four at a time against CN input rows (8 accumulators).
__attribute__((target("avx2,fma"))) static inline float sum_avx2(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

// Eight weights as fp32: loaded (fp32), or shifted into the high half of each lane (bf16, whose bits are an
// fp32's upper 16).
template <typename W>
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 eight_avx2(const W* w) {
  if constexpr (std::is_same_v<W, float>) return _mm256_loadu_ps(w);
  else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)w)), 16));
}

template <int RN, int CN, typename W>
__attribute__((target("avx2,fma"))) static void tile_avx2(const W* w, const float* x, float* out, int64_t K,
                                                         int64_t N) {
  constexpr int H = RN < 4 ? RN : 4;
  constexpr int64_t LINE = 64 / sizeof(W);  // weights a cache line holds
  for (int h = 0; h < RN; h += H) {
    const W* rows = w + h * K;
    __m256 acc[H][CN];
    for (int r = 0; r < H; ++r) for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
      if (k % LINE == 0)
        for (int r = 0; r < H; ++r) _mm_prefetch((const char*)(rows + (r + RN) * K + k), _MM_HINT_T0);
      __m256 xs[CN];
      for (int c = 0; c < CN; ++c) xs[c] = _mm256_loadu_ps(x + c * K + k);
      for (int r = 0; r < H; ++r) {
        __m256 ws = eight_avx2<W>(rows + r * K + k);
        for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_fmadd_ps(ws, xs[c], acc[r][c]);
      }
    }
    for (int r = 0; r < H; ++r) for (int c = 0; c < CN; ++c) out[c * N + h + r] = sum_avx2(acc[r][c]);
  }
}

// RN weight rows (of type W) against all M input rows (of type X), C at a time, with AVX-512 (WIDE) or AVX2, into
// fp32 outputs (O), or bf16 for bf16 rows.
template <int RN, bool WIDE, typename W, typename X, typename O, int CN>
static void tile(const W* w, const X* x, O* out, int64_t K, int64_t N) {
  if constexpr (!WIDE) tile_avx2<RN, CN, W>(w, x, out, K, N);
  else if constexpr (std::is_same_v<W, float>) tile_f32<RN, CN>(w, x, out, K, N);
  else tile_bf16<RN, CN>(w, x, out, K, N);
}

template <int RN, bool WIDE, typename W, typename X, typename O>
static void block(const W* w, const X* x, O* out, int64_t M, int64_t K, int64_t N) {
  int64_t m = 0;
  for (; m + C <= M; m += C) tile<RN, WIDE, W, X, O, C>(w, x + m * K, out + m * N, K, N);
  if (m < M) tile<RN, WIDE, W, X, O, 1>(w, x + m * K, out + m * N, K, N);
}

// int8 weights (-127 to 127: Int8Linear clamps torchao's -128) times int8 rows, as llama.cpp's q8_0 products run:
// each input row is quantized in blocks of QB values (the last may hold 16), one fp32 scale a block (its largest
// magnitude / 127, rounded to nearest even), and each block's products are summed exactly in integers, then scaled
// and summed in fp32; the weight row's scale comes last. VPMADDUBSW multiplies unsigned by signed bytes: |x| (once a
// block, for every weight row) by w signed by x, pairs of at most 127 * 127, no int16 saturation. Half the
// instructions of widening every weight to fp32 for FMAs. AVX2 (every AVX-512 CPU has it too): every host sums alike.
constexpr int64_t QB = 32;
constexpr int64_t DECODE_ROWS = 16;  // a decoding step's rows at most (INT8_ROWS): their buffers are kept

// The scale of a block of n values (n a multiple of 8): its largest magnitude / 127.
__attribute__((target("avx2,fma"))) static float block_scale(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))) / 127.0f;
}

// Eight values divided by their block's scale (times its inverse), rounded to the nearest integer, even on ties.
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 steps(const float* x, __m256 inverse) {
  return _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// A row of K values (a multiple of 8) as int8 q and one scale d a block: x ~ q * d.
__attribute__((target("avx2,fma"))) static void quantize_row(const float* x, int8_t* q, float* d, int64_t K) {
  for (int64_t k = 0, b = 0; k < K; k += QB, ++b) {
    int64_t n = K - k < QB ? K - k : QB;
    float scale = d[b] = block_scale(x + k, n);
    __m256 inverse = _mm256_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
    for (int64_t i = 0; i < n; i += 8) {
      __m256i v = _mm256_cvtps_epi32(steps(x + k + i, inverse));
      __m128i halves = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      _mm_storel_epi64((__m128i*)(q + k + i), _mm_packs_epi16(halves, halves));
    }
  }
}

// The same row as q * d in fp32, in one pass: what the int8 products of a prompt multiply (q8_rounded).
__attribute__((target("avx2,fma"))) static void round_row(const float* x, float* out, int64_t K) {
  for (int64_t k = 0; k < K; k += QB) {
    int64_t n = K - k < QB ? K - k : QB;
    float scale = block_scale(x + k, n);
    __m256 inverse = _mm256_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f), scales = _mm256_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(out + k + i, _mm256_mul_ps(steps(x + k + i, inverse), scales));
  }
}

// A block of 32 int8 values, or at a row's end 16 and zeros (which add nothing: |0| is 0).
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i block_q8(const int8_t* p, bool half) {
  return half ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i*)p)) : _mm256_loadu_si256((const __m256i*)p);
}

// out[c * N + r] = ws[r] * sum over blocks of xd[c][b] * (w[r] . xq[c] over block b), for H weight rows (scales
// ws) and CN input rows.
template <int H, int CN>
__attribute__((target("avx2,fma"))) static void tile_q8(const int8_t* w, const float* ws, const int8_t* xq,
                                                       const float* xd, float* out, int64_t K, int64_t N,
                                                       int64_t blocks) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[H][CN];
  for (int r = 0; r < H; ++r) for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t k = b * QB;
    bool half = K - k < QB;
    if ((k & 63) == 0)  // each cache line of the rows two tiles on, once
      for (int r = 0; r < H; ++r) _mm_prefetch((const char*)(w + (r + 2 * H) * K + k), _MM_HINT_T0);
    __m256i xs[CN], magnitudes[CN];
    __m256 scales[CN];
    for (int c = 0; c < CN; ++c) {
      xs[c] = block_q8(xq + c * K + k, half);
      magnitudes[c] = _mm256_sign_epi8(xs[c], xs[c]);
      scales[c] = _mm256_set1_ps(xd[c * blocks + b]);
    }
    for (int r = 0; r < H; ++r) {
      __m256i ws = block_q8(w + r * K + k, half);
      for (int c = 0; c < CN; ++c) {
        __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitudes[c], _mm256_sign_epi8(ws, xs[c])), ones);
        acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scales[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < H; ++r) for (int c = 0; c < CN; ++c) out[c * N + r] = sum_avx2(acc[r][c]) * ws[r];
}

template <int H>
static void rows_q8(const int8_t* w, const float* ws, const int8_t* xq, const float* xd, float* out, int64_t M,
                    int64_t K, int64_t N, int64_t blocks) {
  int64_t m = 0;
  for (; m + C <= M; m += C) tile_q8<H, C>(w, ws, xq + m * K, xd + m * blocks, out + m * N, K, N, blocks);
  if (m < M) tile_q8<H, 1>(w, ws, xq + m * K, xd + m * blocks, out + m * N, K, N, blocks);
}

template <typename W, typename X, bool WIDE = true, typename O = float>
static void product(const W* w, const X* x, O* out, int64_t M, int64_t K, int64_t N) {
  int64_t blocks = N / R;
  at::parallel_for(0, blocks, 8, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) block<R, WIDE>(w + b * R * K, x, out + b * R, M, K, N);
    if (end == blocks) for (int64_t n = blocks * R; n < N; ++n) block<1, WIDE>(w + n * K, x, out + n, M, K, N);
  });
}

// x [..., K] @ weight [N, K].T -> [..., N], in the weight's dtype (fp32 or bf16), summed in fp32.
at::Tensor few_rows(const at::Tensor& weight, const at::Tensor& x) {
  static const bool wide = __builtin_cpu_supports("avx512f");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.is_contiguous(), "cognimamba::few_rows: inputs");
  int64_t N = weight.size(0), K = weight.size(1);
  auto rows = x.reshape({-1, K}).contiguous();
  int64_t M = rows.size(0);
  auto out = at::empty({M, N}, weight.options());
  if (weight.scalar_type() == at::kFloat) {
    const float* w = weight.data_ptr<float>();
    if (wide) product<float, float>(w, rows.data_ptr<float>(), out.data_ptr<float>(), M, K, N);
    else {
      TORCH_CHECK(K % 8 == 0, "cognimamba::few_rows: fp32 rows of 8s without AVX-512");
      product<float, float, false>(w, rows.data_ptr<float>(), out.data_ptr<float>(), M, K, N);
    }
  } else {
    TORCH_CHECK(wide, "cognimamba::few_rows: bf16 needs AVX-512");
    TORCH_CHECK(weight.scalar_type() == at::kBFloat16, "cognimamba::few_rows: inputs");
    product<uint16_t, uint16_t>(reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()),
                                reinterpret_cast<const uint16_t*>(rows.data_ptr<at::BFloat16>()),
                                out.data_ptr<at::BFloat16>(), M, K, N);
  }
  auto shape = x.sizes().vec();
  shape.back() = N;
  return out.view(shape);
}

// x [..., K] fp32 @ (qweight [N, K] int8 * scale [N] fp32 per row).T -> [..., N] fp32, x quantized as tile_q8 says.
at::Tensor few_rows_int8(const at::Tensor& qweight, const at::Tensor& scale, const at::Tensor& x) {
  TORCH_CHECK(qweight.scalar_type() == at::kChar && x.scalar_type() == at::kFloat && qweight.is_contiguous()
              && scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == qweight.size(0)
              && qweight.size(1) % 16 == 0, "cognimamba::few_rows_int8: inputs");
  int64_t N = qweight.size(0), K = qweight.size(1), blocks = (K + QB - 1) / QB;
  auto rows = x.reshape({-1, K}).contiguous();
  int64_t M = rows.size(0);
  // The rows' int8 values and block scales, in buffers the calling thread keeps (no allocation a call: a decoding
  // step makes some fifty of these calls, each of a few microseconds); a prompt's are let go after its call.
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xd;
  xq.resize(M * K);
  xd.resize(M * blocks);
  const int8_t* w = qweight.data_ptr<int8_t>();
  const float* ws = scale.data_ptr<float>();
  int8_t* q = xq.data();
  float* d = xd.data();
  for (int64_t m = 0; m < M; ++m) quantize_row(rows.data_ptr<float>() + m * K, q + m * K, d + m * blocks, K);
  auto out = at::empty({M, N}, x.options());
  float* o = out.data_ptr<float>();
  constexpr int64_t H = 4;  // weight rows a tile reads at once (AVX2's 16 registers: 4 x C accumulators)
  int64_t tiles = N / H;
  at::parallel_for(0, tiles, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) rows_q8<H>(w + t * H * K, ws + t * H, q, d, o + t * H, M, K, N, blocks);
    if (end == tiles)
      for (int64_t n = tiles * H; n < N; ++n) rows_q8<1>(w + n * K, ws + n, q, d, o + n, M, K, N, blocks);
  });
  if (M > DECODE_ROWS) {  // a prompt (INT8_MAX_ROWS): its rows would otherwise stay held for the thread's life
    std::vector<int8_t>().swap(xq);
    std::vector<float>().swap(xd);
  }
  auto shape = x.sizes().vec();
  shape.back() = N;
  return out.view(shape);
}

// x [..., K] fp32 (K a multiple of 8) with each row rounded as few_rows_int8 rounds it, back in fp32: the rows a
// prompt's int8 products multiply (Int8Linear), in one pass where PyTorch's ops would take eight.
at::Tensor q8_rounded(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) % 8 == 0, "cognimamba::q8_rounded: fp32 rows of 8s");
  int64_t K = x.size(-1);
  auto rows = x.reshape({-1, K}).contiguous();
  auto out = at::empty_like(rows);
  const float* in = rows.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows.size(0), 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) round_row(in + m * K, o + m * K, K);
  });
  return out.view(x.sizes());
}

// x [..., K] fp32 @ weight [N, K] bf16 .T -> [..., N] fp32, for CPUs without native bf16 (AVX2 is enough): half
// of fp32's bytes streamed, each weight widened to fp32 in registers, fp32 arithmetic.
at::Tensor few_rows_bf16_weight(const at::Tensor& weight, const at::Tensor& x) {
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kFloat && weight.is_contiguous()
              && weight.size(1) % 8 == 0, "cognimamba::few_rows_bf16_weight: inputs");
  int64_t N = weight.size(0), K = weight.size(1);
  auto rows = x.reshape({-1, K}).contiguous();
  int64_t M = rows.size(0);
  auto out = at::empty({M, N}, x.options());
  product<uint16_t, float, false>(reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()),
                                  rows.data_ptr<float>(), out.data_ptr<float>(), M, K, N);
  auto shape = x.sizes().vec();
  shape.back() = N;
  return out.view(shape);
}

// x [..., K] bf16 @ a weight oneDNN packed (mkldnn::_reorder_linear_weight), through oneDNN's own linear.
at::Tensor packed_bf16(const at::Tensor& packed, const at::Tensor& x) {
  static const auto& linear = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack{x, packed, c10::IValue(), c10::IValue(std::string("none")),
                                 c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
  linear.callBoxed(stack);
  return stack[0].toTensor();
}

// Registered in C++, not as Python functions: a call from Python enters the dispatcher once and gives the GIL
// up once, where a Python kernel would take it back (and wait for it, beside a busy server's event loop).
TORCH_LIBRARY_IMPL(cognimamba, CPU, m) {
  m.impl("few_rows", few_rows);
  m.impl("few_rows_int8", few_rows_int8);
  m.impl("q8_rounded", q8_rounded);
  m.impl("few_rows_bf16_weight", few_rows_bf16_weight);
}
TORCH_LIBRARY_IMPL(cognimamba, MkldnnCPU, m) {  // the packed weight's dispatch key
  m.impl("packed_bf16", packed_bf16);
}
"""

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "kernel": the library's path, "avx512" and "bf16" (see _build); or "error": why not
_LIBRARY = torch.library.Library("cognimamba", "FRAGMENT")  # the ops' schemas; their CPU kernels are SOURCE's
_LIBRARY.define("few_rows(Tensor weight, Tensor x) -> Tensor")
_LIBRARY.define("packed_bf16(Tensor packed, Tensor x) -> Tensor")
_LIBRARY.define("few_rows_int8(Tensor qweight, Tensor scale, Tensor x) -> Tensor")
_LIBRARY.define("q8_rounded(Tensor x) -> Tensor")
_LIBRARY.define("few_rows_bf16_weight(Tensor weight, Tensor x) -> Tensor")


def build_name() -> str:
    """The extension's name, torch's version and this environment in it: torch keeps builds by name, one built
    against another version's headers must not be loaded, and two virtual environments sharing one build would
    rebuild it for each other (their include paths differ) on every first use."""
    environment = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
    return "cognimamba_cpu_matmul_" + re.sub(r"\W", "_", torch.__version__) + "_" + environment


def available() -> bool:
    """Whether the kernel is built and runs here. Only `ready` builds it: at model load, never in the middle of a
    request (the first build takes about half a minute)."""
    return "kernel" in _state


def ready() -> bool:
    """Compile the kernel now if this CPU can run it (at load, before torch.compile traces); whether it runs."""
    with _lock:
        if not _state:
            _state.update(_build())
    return "kernel" in _state


def clear_stale_lock(name: str) -> None:
    """Remove a build lock older than STALE_LOCK_SECONDS. torch's builder waits for as long as a lock file exists,
    and a build that was killed (Ctrl-C during the first use) leaves one behind: every later start would hang."""
    from torch.utils.cpp_extension import _get_build_directory  # noqa: PLC0415 (imports setuptools: only here)

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    with contextlib.suppress(OSError):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
            log.warning("removed a stale build lock left by an interrupted build: %s", lock)


def _build() -> dict[str, Any]:
    """{"kernel": the built library's path, "avx512": whether the CPU has AVX-512 (every kernel runs) or only AVX2
    (the fp32 and int8 ones), "bf16": whether it has AVX512-BF16}, or {"error": why not}."""
    if not AVX512 and not cpu_has_flag("avx2"):
        return {"error": "neither AVX-512 nor AVX2 on this CPU"}
    try:
        from torch.utils.cpp_extension import load_inline  # noqa: PLC0415 (imports setuptools: only here)

        clear_stale_lock(build_name())
        kernel = load_inline(build_name(), cpp_sources=SOURCE, is_python_module=False,
                             extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as error:  # no compiler, no ninja, an old one: PyTorch's products serve instead
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        log.warning("CPU decoding kernel unavailable (%s); the products stay on PyTorch's", message)
        return {"error": message}
    return {"kernel": kernel, "avx512": AVX512,
            "bf16": cpu_has_flag("avx512_bf16")}  # Cooper Lake, Sapphire Rapids on; Zen 4 on


def may_apply(weight: torch.Tensor) -> bool:
    """Whether some decoding step's rows could take the kernel for this weight (so it is worth building)."""
    if not weight.is_cpu:
        return False
    if weight.dtype == torch.bfloat16:
        return AVX512
    return weight.dtype == torch.int8 or (weight.dtype == torch.float32 and FP32_ON
                                          and weight.numel() >= FP32_MIN_ELEMENTS)


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A decoding step's rows (BF16_ROWS, FP32_ROWS) without autograd, times a plain contiguous weight the kernel
    may take (may_apply) of the same dtype."""
    if x.dtype != weight.dtype or torch.is_grad_enabled() or not weight.is_contiguous() or not may_apply(weight):
        return False
    columns = weight.size(1)
    rows = input_rows(x, columns)
    fits = BF16_ROWS[0] <= rows <= BF16_ROWS[1] if x.dtype == torch.bfloat16 else fp32_rows_fit(rows, columns)
    return (fits and type(weight) in (torch.Tensor, torch.nn.Parameter) and available()
            and (x.dtype == torch.float32 or _state["bf16"]))


def input_rows(x: torch.Tensor, columns: int) -> int:
    """How many rows of `columns` values x holds (0 where its last dimension is not that)."""
    return x.numel() // columns if x.size(-1) == columns else 0


def fp32_rows_fit(rows: int, columns: int) -> bool:
    """FP32_ROWS rows; with AVX2 alone, whole 8s of a row."""
    return FP32_ROWS[0] <= rows <= FP32_ROWS[1] and (AVX512 or columns % 8 == 0)


def takes_one_fp32_row(weight: torch.Tensor) -> bool:
    """Whether one fp32 row times this weight takes the kernel (already built): then no decoding copy is needed."""
    return (weight.dtype == torch.float32 and may_apply(weight) and fp32_rows_fit(1, weight.size(1))
            and available())


def few_rows(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] (a few rows) @ weight.T, weight [out, in] fp32 or bf16: [..., out] in its dtype, fp32 sums."""
    return torch.ops.cognimamba.few_rows(weight, x)


@torch.library.register_fake("cognimamba::few_rows")
def _(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.size(0)))


def applies_int8(x: torch.Tensor, qweight: torch.Tensor) -> bool:
    """A decoding step's fp32 rows (INT8_ROWS; prompts too where INT8_MAX_ROWS says) without autograd, times an int8
    weight [out, in] with `in` a multiple of 16, on a CPU the kernel runs on."""
    if x.dtype != torch.float32 or qweight.dtype != torch.int8 or torch.is_grad_enabled() or not qweight.is_cpu:
        return False
    columns = qweight.size(1)
    rows = input_rows(x, columns)
    return INT8_ROWS[0] <= rows <= INT8_MAX_ROWS and columns % 16 == 0 and qweight.is_contiguous() and available()


def q8_rounded(x: torch.Tensor) -> torch.Tensor:
    """x with each row's blocks of Q8_BLOCK values (the last may be shorter) rounded to the int8 steps of their own
    scale, largest magnitude / 127, nearest even: the int8 kernel's rounding of its rows, in PyTorch. The int8
    format's products that do not take the kernel (prompts, GPUs) multiply these rows, so that a sequence's
    numbers do not depend on how many rows a pass held (a prompt read alone or beside others). fp32 arithmetic;
    on CPU fp32 rows of whole 8s, in one pass of the kernel library (its quantizer itself), where built."""
    if x.dtype == torch.float32 and x.is_cpu and x.size(-1) % 8 == 0 and available():
        return torch.ops.cognimamba.q8_rounded(x)
    rows = x.float()
    columns = rows.size(-1)
    whole = columns - columns % Q8_BLOCK
    parts = [rows[..., :whole].unflatten(-1, (-1, Q8_BLOCK))] if whole else []
    if whole < columns:
        parts.append(rows[..., whole:].unsqueeze(-2))
    rounded = []
    for part in parts:
        scale = part.abs().amax(dim=-1, keepdim=True) / 127
        inverse = torch.where(scale != 0, 1 / scale, torch.zeros_like(scale))
        rounded.append((torch.round(part * inverse) * scale).flatten(-2))
    return torch.cat(rounded, dim=-1).to(x.dtype)


def few_rows_int8(qweight: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] fp32 (a few rows) @ (qweight [out, in] int8 from -127 to 127 * scale [out] per row).T: [..., out]
    fp32, with x's rows rounded to int8 in blocks of Q8_BLOCK (q8_rounded) and each block's products summed in
    integers. A weight of -128 would be read as +128's product negated wrongly: Int8Linear clamps it away."""
    return torch.ops.cognimamba.few_rows_int8(qweight, scale, x)


@torch.library.register_fake("cognimamba::q8_rounded")
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.register_fake("cognimamba::few_rows_int8")
def _(qweight: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], qweight.size(0)))


def applies_bf16_weight(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A decoding step's fp32 rows (INT8_ROWS: the same 1 to 16) without autograd, times a bf16 weight [out, in]
    with `in` a multiple of 8, on a CPU the kernel runs on (AVX2 is enough; no native bf16 needed)."""
    if x.dtype != torch.float32 or weight.dtype != torch.bfloat16 or torch.is_grad_enabled() or not weight.is_cpu:
        return False
    columns = weight.size(1)
    rows = input_rows(x, columns)
    return INT8_ROWS[0] <= rows <= INT8_ROWS[1] and columns % 8 == 0 and weight.is_contiguous() and available()


def few_rows_bf16_weight(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] fp32 (a few rows) @ weight [out, in] bf16 .T: [..., out] fp32, the weight widened in registers."""
    return torch.ops.cognimamba.few_rows_bf16_weight(weight, x)


@torch.library.register_fake("cognimamba::few_rows_bf16_weight")
def _(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.size(0)))


def packs_bf16(weight: torch.Tensor) -> bool:
    """Whether oneDNN can pack this weight for `packed_bf16`: bf16 on CPU in a wheel built with oneDNN, and the
    kernel library (which holds packed_bf16's CPU kernel) built."""
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and available())


def pack_bf16(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's packed copy of a bf16 weight [out, in] (same bytes again), for `packed_bf16`, in the layout oneDNN
    picks for PACK_ROWS rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)


def packed_bf16(packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] bf16 @ the weight `pack_bf16` packed, .T: [..., out]. An op of its own so that torch.compile
    traces it without lowering the packed tensor, which Inductor cannot."""
    return torch.ops.cognimamba.packed_bf16(packed, x)


@torch.library.register_fake("cognimamba::packed_bf16")
def _(packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], packed.size(0)))
