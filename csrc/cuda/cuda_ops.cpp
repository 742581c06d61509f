// CUDA implementations of the spatten:: ops, registered for the CUDA dispatch key. Compiled only when the
// installed torch has CUDA. The top-k engine is a hand-written kernel (topk_kernel.cu); the attention-shaped
// ops are expressed in ATen so that they run on cuBLAS/cuDNN-backed kernels with the same semantics as the
// CPU kernels and spatten/ops_ref.py.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <initializer_list>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>

#include "topk_kernel.cuh"

namespace spatten::cuda_ops {
namespace {

void CheckFloat(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "spatten.", op, ": ", name, " must be a floating dtype, got ",
              t.scalar_type());
}

void CheckCuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), "spatten.", op, ": ", name, " must be on the CUDA device like the other inputs");
}

void CheckMask(const char* op, const char* name, const at::Tensor& mask, int64_t b, int64_t l) {
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, "spatten.", op, ": ", name, " must be bool (True = real token), got ",
              mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == l, "spatten.", op, ": ", name,
              " must have shape [", b, ", ", l, "], got ", mask.sizes());
  CheckCuda(op, name, mask);
}

void CheckAccumulator(const char* op, const at::Tensor& acc, at::IntArrayRef shape) {
  TORCH_CHECK_TYPE(acc.scalar_type() == at::kFloat, "spatten.", op, ": accumulator must be float32, got ",
              acc.scalar_type());
  TORCH_CHECK_VALUE(acc.sizes() == shape, "spatten.", op, ": accumulator must have shape ", shape, ", got ", acc.sizes());
  CheckCuda(op, "accumulator", acc);
}

// float64 when any defined input is float64, else float32: the dtype the CPU kernels compute and return in.
at::ScalarType ComputeDtype(std::initializer_list<at::Tensor> inputs) {
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

// A NaN or infinite logit on an allowed key raises, as on the CPU (docs/ops.md "Non-finite values").
void CheckFiniteLogits(const char* op, const at::Tensor& logits, const std::optional<at::Tensor>& allowed) {
  at::Tensor ok = logits.isfinite();
  if (allowed) ok = ok.logical_or(allowed->logical_not());
  TORCH_CHECK_VALUE(ok.all().item<bool>(), "spatten.", op, ": non-finite attention logits (q or k holds NaN or Inf ",
                    "on an allowed key, or scaling * q.k overflows)");
}

}  // namespace

at::Tensor topk_indices_cuda(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK_VALUE(scores.dim() >= 1, "spatten.topk_indices: scores must have at least 1 dimension, got a scalar");
  CheckFloat("topk_indices", "scores", scores);
  const int64_t n = scores.size(-1);
  TORCH_CHECK_VALUE(k >= 0 && k <= n, "spatten.topk_indices: k must be in [0, ", n, "] (the last dim), got ", k);
  c10::cuda::CUDAGuard guard(scores.device());
  const at::Tensor rows = scores.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE(!rows.isnan().any().item<bool>(), "spatten.topk_indices: scores contain NaN");
  auto out_sizes = scores.sizes().vec();
  out_sizes.back() = k;
  at::Tensor out = at::empty(out_sizes, scores.options().dtype(at::kLong));
  const int64_t row_count = n == 0 ? 0 : rows.numel() / n;
  const cudaError_t err = spatten::cuda::topk_indices(rows.data_ptr<float>(), row_count, n, k,
                                                      out.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "spatten.topk_indices: CUDA kernel failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor token_importance_cuda(const at::Tensor& probs, const std::optional<at::Tensor>& query_mask,
                                 const std::optional<at::Tensor>& key_mask,
                                 const std::optional<at::Tensor>& accumulator) {
  const char* op = "token_importance";
  CheckFloat(op, "probs", probs);
  TORCH_CHECK_VALUE(probs.dim() == 4, "spatten.token_importance: probs must be [B, H, Lq, Lk], got shape ", probs.sizes());
  const int64_t b = probs.size(0), lq = probs.size(2), lk = probs.size(3);
  at::Tensor p = probs.to(at::kFloat);
  if (query_mask) {
    CheckMask(op, "query_mask", *query_mask, b, lq);
    p = at::where(query_mask->view({b, 1, lq, 1}), p, at::zeros({}, p.options()));
  }
  at::Tensor scores = p.sum({1, 2});
  if (key_mask) {
    CheckMask(op, "key_mask", *key_mask, b, lk);
    scores = at::where(*key_mask, scores, at::zeros({}, scores.options()));
  }
  if (accumulator) {
    CheckAccumulator(op, *accumulator, {b, lk});
    scores = *accumulator + scores;
  }
  return scores;
}

at::Tensor head_importance_cuda(const at::Tensor& attn_out, const std::optional<at::Tensor>& query_mask,
                                const std::optional<at::Tensor>& accumulator) {
  const char* op = "head_importance";
  CheckFloat(op, "attn_out", attn_out);
  TORCH_CHECK_VALUE(attn_out.dim() == 4, "spatten.head_importance: attn_out must be [B, H, Lq, D], got shape ",
              attn_out.sizes());
  const int64_t b = attn_out.size(0), h = attn_out.size(1), lq = attn_out.size(2);
  at::Tensor a = attn_out.to(at::kFloat).abs();
  if (query_mask) {
    CheckMask(op, "query_mask", *query_mask, b, lq);
    a = at::where(query_mask->view({b, 1, lq, 1}), a, at::zeros({}, a.options()));
  }
  at::Tensor scores = a.sum({2, 3});
  if (accumulator) {
    CheckAccumulator(op, *accumulator, {b, h});
    scores = *accumulator + scores;
  }
  return scores;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_value_attention_cuda(const at::Tensor& probs,
                                                                          const at::Tensor& v, int64_t k) {
  const char* op = "local_value_attention";
  CheckFloat(op, "probs", probs);
  CheckFloat(op, "v", v);
  TORCH_CHECK_VALUE(probs.dim() == 4, "spatten.local_value_attention: probs must be [B, H, Lq, Lk], got shape ",
              probs.sizes());
  TORCH_CHECK_VALUE(v.dim() == 4, "spatten.local_value_attention: v must be [B, H, Lk, D], got shape ", v.sizes());
  const int64_t b = probs.size(0), h = probs.size(1), lq = probs.size(2), lk = probs.size(3), d = v.size(3);
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h && v.size(2) == lk, "spatten.local_value_attention: v must have shape "
              "[B, H, Lk, D] = [", b, ", ", h, ", ", lk, ", D], got ", v.sizes());
  TORCH_CHECK_VALUE(k >= 0 && k <= lk, "spatten.local_value_attention: k must be in [0, ", lk, "] (Lk), got ", k);
  CheckCuda(op, "v", v);
  const at::Tensor kept = topk_indices_cuda(probs, k);                       // [B, H, Lq, k]
  const at::ScalarType dtype = ComputeDtype({probs, v});
  const at::Tensor p = probs.to(dtype);
  const at::Tensor kept_probs = p.gather(-1, kept);                          // [B, H, Lq, k]
  const at::Tensor vf = v.to(dtype);
  // Gather the kept V rows per query row: [B, H, Lq*k, D], then a batched weighted sum.
  const at::Tensor kept_v = vf.gather(2, kept.reshape({b, h, lq * k, 1}).expand({b, h, lq * k, d}))
                                .view({b, h, lq, k, d});
  const at::Tensor out = (kept_probs.unsqueeze(-1) * kept_v).sum(3);
  at::Tensor used = at::zeros({b, h, lk}, probs.options().dtype(at::kBool));
  used.scatter_(2, kept.reshape({b, h, lq * k}), true);
  return {out, kept, used.sum(-1)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_msb_lsb_cuda(const at::Tensor& x, int64_t msb_bits,
                                                                     int64_t lsb_bits, c10::string_view per) {
  const char* op = "quantize_msb_lsb";
  CheckFloat(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, "spatten.quantize_msb_lsb: x must be [..., L, D] (at least 2 dims), got shape ",
              x.sizes());
  TORCH_CHECK_VALUE(msb_bits >= 1 && lsb_bits >= 0 && msb_bits + lsb_bits >= 2 && msb_bits + lsb_bits <= 16,
              "spatten.quantize_msb_lsb: bits out of range: need msb_bits >= 1, lsb_bits >= 0 and "
              "2 <= msb_bits + lsb_bits <= 16, got msb_bits=", msb_bits, ", lsb_bits=", lsb_bits);
  TORCH_CHECK_VALUE(per == "head" || per == "token", "spatten.quantize_msb_lsb: per must be 'head' or 'token', got '",
              std::string(per), "'");
  const at::Tensor xf = x.to(ComputeDtype({x}));
  TORCH_CHECK_VALUE(xf.isfinite().all().item<bool>(), "spatten.quantize_msb_lsb: x contains NaN or Inf");
  const double qmax = static_cast<double>((1 << (msb_bits + lsb_bits - 1)) - 1);
  at::Tensor group_max;
  if (xf.numel() == 0) {
    auto sizes = x.sizes().vec();
    if (per == "head") sizes[sizes.size() - 2] = 1;
    sizes.back() = 1;
    group_max = at::zeros(sizes, xf.options());
  } else if (per == "head") {
    group_max = xf.abs().amax({-2, -1}, /*keepdim=*/true);
  } else {
    group_max = xf.abs().amax({-1}, /*keepdim=*/true);
  }
  // Floor at the smallest subnormal so that x / scale stays finite (as the CPU kernel does).
  const double tiniest = xf.scalar_type() == at::kDouble ? std::numeric_limits<double>::denorm_min()
                                                         : std::numeric_limits<float>::denorm_min();
  const at::Tensor scale =
      at::where(group_max > 0, at::clamp_min(group_max / qmax, tiniest), at::ones({}, group_max.options()));
  const at::Tensor q = at::clamp(at::round(xf / scale), -qmax, qmax).to(at::kInt);
  const at::Tensor msb = at::floor_divide(q, 1 << lsb_bits);
  const at::Tensor lsb = q - msb * (1 << lsb_bits);
  return {msb.to(at::kShort), lsb.to(at::kShort), scale};
}

at::Tensor dequantize_msb_lsb_cuda(const at::Tensor& msb, const std::optional<at::Tensor>& lsb,
                                   const at::Tensor& scale, int64_t lsb_bits) {
  TORCH_CHECK_TYPE(msb.scalar_type() == at::kShort, "spatten.dequantize_msb_lsb: msb must be int16, got ",
              msb.scalar_type());
  TORCH_CHECK_TYPE(scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kDouble,
                   "spatten.dequantize_msb_lsb: scale must be float32 or float64, got ", scale.scalar_type());
  TORCH_CHECK_VALUE(lsb_bits >= 0 && lsb_bits <= 15, "spatten.dequantize_msb_lsb: lsb_bits must be in [0, 15], got ",
              lsb_bits);
  at::Tensor q = msb.to(at::kInt) * (1 << lsb_bits);
  if (lsb) {
    TORCH_CHECK_TYPE(lsb->scalar_type() == at::kShort, "spatten.dequantize_msb_lsb: lsb must be int16, got ",
                lsb->scalar_type());
    TORCH_CHECK_VALUE(lsb->sizes() == msb.sizes(), "spatten.dequantize_msb_lsb: lsb shape ", lsb->sizes(),
                " differs from msb shape ", msb.sizes());
    q = q + lsb->to(at::kInt);
  } else if (lsb_bits > 0) {
    q = q + (1 << (lsb_bits - 1));  // midpoint of the LSBs not fetched
  }
  return q.to(scale.scalar_type()) * scale;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_cuda(
    const at::Tensor& q, const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale,
    const at::Tensor& v, const std::optional<at::Tensor>& mask, double threshold, int64_t lsb_bits, double scaling) {
  const char* op = "progressive_attention";
  CheckFloat(op, "q", q);
  CheckFloat(op, "v", v);
  TORCH_CHECK_VALUE(q.dim() == 4, "spatten.progressive_attention: q must be [B, H, Lq, D], got shape ", q.sizes());
  TORCH_CHECK_VALUE(v.dim() == 4, "spatten.progressive_attention: v must be [B, H, Lk, Dv], got shape ", v.sizes());
  const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), d = q.size(3), lk = v.size(2);
  TORCH_CHECK_VALUE(k_msb.dim() == 4 && k_msb.size(0) == b && k_msb.size(1) == h && k_msb.size(2) == lk &&
                  k_msb.size(3) == d,
              "spatten.progressive_attention: k_msb must have shape [B, H, Lk, D] = [", b, ", ", h, ", ", lk, ", ", d,
              "], got ", k_msb.sizes());
  TORCH_CHECK_VALUE(v.size(0) == b && v.size(1) == h, "spatten.progressive_attention: v must have shape [B, H, Lk, Dv] "
              "with B, H = ", b, ", ", h, ", got ", v.sizes());
  TORCH_CHECK_VALUE(threshold == threshold, "spatten.progressive_attention: threshold is NaN");
  std::optional<at::Tensor> allowed;
  if (mask) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "spatten.progressive_attention: mask must be bool "
                "(True = may attend), got ", mask->scalar_type());
    allowed = mask->expand({b, h, lq, lk});
  }
  const at::ScalarType dtype = ComputeDtype({q, v, k_scale});
  const at::Tensor qf = q.to(dtype);
  const at::Tensor scale = k_scale.to(dtype);
  auto softmax_probs = [&](const at::Tensor& keys) {
    at::Tensor logits = at::matmul(qf, keys.transpose(-1, -2)) * scaling;
    CheckFiniteLogits(op, logits, allowed);
    if (allowed) logits = logits.masked_fill(allowed->logical_not(), -std::numeric_limits<double>::infinity());
    return at::nan_to_num(at::softmax(logits, -1), 0.0);  // a row with no allowed key: NaN -> 0
  };
  const at::Tensor coarse = softmax_probs(dequantize_msb_lsb_cuda(k_msb, std::nullopt, scale, lsb_bits));
  const at::Tensor has_key = allowed ? allowed->any(-1) : at::full({b, h, lq}, lk > 0, q.options().dtype(at::kBool));
  const at::Tensor refetch = lk > 0 ? has_key.logical_and(coarse.amax(-1) < threshold) : has_key;
  at::Tensor probs = coarse;
  if (refetch.any().item<bool>()) {
    const at::Tensor fine = softmax_probs(dequantize_msb_lsb_cuda(k_msb, k_lsb, scale, lsb_bits));
    probs = at::where(refetch.unsqueeze(-1), fine, coarse);
  }
  return {at::matmul(probs, v.to(dtype)), probs, refetch};
}

// Backward kernels of the autograd formulas in spatten/ops.py, in ATen (same formulas as
// csrc/kernels/attention_backward.h and local_value.h; scatter_add sums in an unspecified order on the GPU).
std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_backward_cuda(
    const std::optional<at::Tensor>& grad_out, const std::optional<at::Tensor>& grad_probs, const at::Tensor& q,
    const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale, const at::Tensor& v,
    const at::Tensor& probs, const at::Tensor& refetch, int64_t lsb_bits, double scaling) {
  const at::ScalarType dtype = ComputeDtype({q, v, k_scale});
  const at::Tensor qf = q.to(dtype), vf = v.to(dtype), p = probs.to(dtype), scale = k_scale.to(dtype);
  at::Tensor dp = at::zeros_like(p);
  at::Tensor grad_v = at::zeros_like(vf);
  if (grad_out) {
    const at::Tensor go = grad_out->to(dtype);
    dp = at::matmul(go, vf.transpose(-1, -2));
    grad_v = at::matmul(p.transpose(-1, -2), go);
  }
  if (grad_probs) dp = dp + grad_probs->to(dtype);
  const at::Tensor ds = p * (dp - (dp * p).sum(-1, /*keepdim=*/true)) * scaling;
  const at::Tensor coarse = dequantize_msb_lsb_cuda(k_msb, std::nullopt, scale, lsb_bits);
  const at::Tensor full = dequantize_msb_lsb_cuda(k_msb, k_lsb, scale, lsb_bits);
  const at::Tensor grad_q = at::where(refetch.unsqueeze(-1), at::matmul(ds, full), at::matmul(ds, coarse));
  const at::Tensor grad_k = at::matmul(ds.transpose(-1, -2), qf);
  return {grad_q, grad_k, grad_v};
}

std::tuple<at::Tensor, at::Tensor> local_value_attention_backward_cuda(const at::Tensor& grad_out,
                                                                       const at::Tensor& probs, const at::Tensor& v,
                                                                       const at::Tensor& kept) {
  const at::ScalarType dtype = ComputeDtype({probs, v, grad_out});
  const at::Tensor p = probs.to(dtype), vf = v.to(dtype), go = grad_out.to(dtype);
  const int64_t b = p.size(0), h = p.size(1), lq = p.size(2), k = kept.size(3), d = vf.size(3);
  const at::Tensor rows = kept.reshape({b, h, lq * k, 1}).expand({b, h, lq * k, d});
  const at::Tensor kept_v = vf.gather(2, rows).view({b, h, lq, k, d});
  const at::Tensor grad_probs = at::zeros_like(p).scatter(-1, kept, (go.unsqueeze(3) * kept_v).sum(-1));
  const at::Tensor contributions = (p.gather(-1, kept).unsqueeze(-1) * go.unsqueeze(3)).reshape({b, h, lq * k, d});
  const at::Tensor grad_v = at::zeros_like(vf).scatter_add(2, rows, contributions);
  return {grad_probs, grad_v};
}

}  // namespace spatten::cuda_ops

TORCH_LIBRARY_IMPL(spatten, CUDA, m) {
  using namespace spatten::cuda_ops;
  m.impl("topk_indices", &topk_indices_cuda);
  m.impl("token_importance", &token_importance_cuda);
  m.impl("head_importance", &head_importance_cuda);
  m.impl("local_value_attention", &local_value_attention_cuda);
  m.impl("quantize_msb_lsb", &quantize_msb_lsb_cuda);
  m.impl("dequantize_msb_lsb", &dequantize_msb_lsb_cuda);
  m.impl("progressive_attention", &progressive_attention_cuda);
  m.impl("progressive_attention_backward", &progressive_attention_backward_cuda);
  m.impl("local_value_attention_backward", &local_value_attention_backward_cuda);
}
