// ATen adapters for cascade token and head importance.
#include <ATen/Parallel.h>

#include "adapters.h"
#include "checks.h"
#include "kernels/importance.h"

namespace spatten::torch_ops {
namespace {

// Key columns per parallel task of token_importance: wide enough for vector loads, narrow enough to split.
constexpr int64_t kColumnBlock = 256;

const bool* optional_bool_ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<bool>() : nullptr; }

at::Tensor checked_accumulator(const char* op, const std::optional<at::Tensor>& acc, at::IntArrayRef want) {
  if (!acc.has_value()) return {};
  check_dtype(op, "accumulator", *acc, at::kFloat);
  check_cpu(op, "accumulator", *acc);
  check_shape(op, "accumulator", *acc, want);
  return acc->contiguous();
}

at::Tensor checked_optional_mask(const char* op, const char* name, const std::optional<at::Tensor>& mask,
                                 at::IntArrayRef want) {
  return mask.has_value() ? checked_mask(op, name, *mask, want) : at::Tensor();
}

}  // namespace

at::Tensor token_importance_cpu(const at::Tensor& probs, const std::optional<at::Tensor>& query_mask,
                                const std::optional<at::Tensor>& key_mask,
                                const std::optional<at::Tensor>& accumulator) {
  constexpr const char* op = "spatten.token_importance";
  check_float_4d(op, "probs", probs, "[B, H, Lq, Lk]");
  const int64_t b = probs.size(0), h = probs.size(1), lq = probs.size(2), lk = probs.size(3);
  const at::Tensor qmask = checked_optional_mask(op, "query_mask", query_mask, {b, lq});
  const at::Tensor kmask = checked_optional_mask(op, "key_mask", key_mask, {b, lk});
  const at::Tensor acc = checked_accumulator(op, accumulator, {b, lk});
  const at::Tensor p = as_contiguous_float(probs);
  at::Tensor out = at::empty({b, lk}, probs.options().dtype(at::kFloat));
  if (b == 0 || lk == 0) return out;

  const float* p_ptr = p.data_ptr<float>();
  const bool* qm = optional_bool_ptr(qmask);
  const bool* km = optional_bool_ptr(kmask);
  const float* acc_ptr = acc.defined() ? acc.data_ptr<float>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  const int64_t blocks = (lk + kColumnBlock - 1) / kColumnBlock;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(h * lq * std::min(lk, kColumnBlock), 1));
  at::parallel_for(0, b * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / blocks, col = (task % blocks) * kColumnBlock;
      spatten::token_importance_columns(p_ptr + bi * h * lq * lk, h, lq, lk, qm ? qm + bi * lq : nullptr,
                                        km ? km + bi * lk : nullptr, acc_ptr ? acc_ptr + bi * lk : nullptr, col,
                                        std::min(col + kColumnBlock, lk), out_ptr + bi * lk);
    }
  });
  return out;
}

at::Tensor head_importance_cpu(const at::Tensor& attn_out, const std::optional<at::Tensor>& query_mask,
                               const std::optional<at::Tensor>& accumulator) {
  constexpr const char* op = "spatten.head_importance";
  check_float_4d(op, "attn_out", attn_out, "[B, H, Lq, D]");
  const int64_t b = attn_out.size(0), h = attn_out.size(1), lq = attn_out.size(2), d = attn_out.size(3);
  const at::Tensor qmask = checked_optional_mask(op, "query_mask", query_mask, {b, lq});
  const at::Tensor acc = checked_accumulator(op, accumulator, {b, h});
  const at::Tensor a = as_contiguous_float(attn_out);
  at::Tensor out = at::empty({b, h}, attn_out.options().dtype(at::kFloat));
  if (b * h == 0) return out;

  const float* a_ptr = a.data_ptr<float>();
  const bool* qm = optional_bool_ptr(qmask);
  const float* acc_ptr = acc.defined() ? acc.data_ptr<float>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, b * h, row_grain(lq * d), [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t bi = bh / h;
      const float sum = spatten::head_importance_head(a_ptr + bh * lq * d, lq, d, qm ? qm + bi * lq : nullptr);
      out_ptr[bh] = acc_ptr ? acc_ptr[bh] + sum : sum;
    }
  });
  return out;
}

}  // namespace spatten::torch_ops
