#pragma once
// Declarations of the ATen adapters; registration.cpp binds them to the spatten:: schemas.
#include <ATen/ATen.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace spatten::torch_ops {

at::Tensor topk_indices_cpu(const at::Tensor& scores, int64_t k);

at::Tensor token_importance_cpu(const at::Tensor& probs, const std::optional<at::Tensor>& query_mask,
                                const std::optional<at::Tensor>& key_mask,
                                const std::optional<at::Tensor>& accumulator);

at::Tensor head_importance_cpu(const at::Tensor& attn_out, const std::optional<at::Tensor>& query_mask,
                               const std::optional<at::Tensor>& accumulator);

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_value_attention_cpu(const at::Tensor& probs,
                                                                         const at::Tensor& v, int64_t k);

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_msb_lsb_cpu(const at::Tensor& x, int64_t msb_bits,
                                                                    int64_t lsb_bits, c10::string_view per);

at::Tensor dequantize_msb_lsb_cpu(const at::Tensor& msb, const std::optional<at::Tensor>& lsb,
                                  const at::Tensor& scale, int64_t lsb_bits);

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_cpu(
    const at::Tensor& q, const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale,
    const at::Tensor& v, const std::optional<at::Tensor>& mask, double threshold, int64_t lsb_bits,
    double scaling);

std::tuple<at::Tensor, at::Tensor> attention_with_importance_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v,
                                                                 const std::optional<at::Tensor>& mask,
                                                                 double scaling,
                                                                 const std::optional<at::Tensor>& query_mask);

// Backward ops (autograd formulas registered in spatten/ops.py; see docs/ops.md).
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& q, const at::Tensor& k,
                                                                      const at::Tensor& v,
                                                                      const std::optional<at::Tensor>& mask,
                                                                      double scaling);

std::tuple<at::Tensor, at::Tensor, at::Tensor> progressive_attention_backward_cpu(
    const std::optional<at::Tensor>& grad_out, const std::optional<at::Tensor>& grad_probs, const at::Tensor& q,
    const at::Tensor& k_msb, const at::Tensor& k_lsb, const at::Tensor& k_scale, const at::Tensor& v,
    const at::Tensor& probs, const at::Tensor& refetch, int64_t lsb_bits, double scaling);

std::tuple<at::Tensor, at::Tensor> local_value_attention_backward_cpu(const at::Tensor& grad_out,
                                                                      const at::Tensor& probs, const at::Tensor& v,
                                                                      const at::Tensor& kept);

}  // namespace spatten::torch_ops
