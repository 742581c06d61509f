#pragma once
// Declarations of the ATen adapters; registration.cpp binds them to the spatten:: schemas.
#include <ATen/ATen.h>

namespace spatten::torch_ops {

at::Tensor topk_indices_cpu(const at::Tensor& scores, int64_t k);

}  // namespace spatten::torch_ops
