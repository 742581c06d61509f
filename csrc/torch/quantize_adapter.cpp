// ATen adapters for MSB/LSB quantization and dequantization.
#include <ATen/Parallel.h>

#include <atomic>

#include "adapters.h"
#include "checks.h"
#include "kernels/quantize.h"

namespace spatten::torch_ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_msb_lsb_cpu(const at::Tensor& x, int64_t msb_bits,
                                                                    int64_t lsb_bits, c10::string_view per) {
  constexpr const char* op = "spatten.quantize_msb_lsb";
  check_float(op, "x", x);
  check_cpu(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must be [..., L, D] (at least 2 dims), got shape ", x.sizes());
  TORCH_CHECK_VALUE(msb_bits >= 1 && lsb_bits >= 0 && msb_bits + lsb_bits >= 2 && msb_bits + lsb_bits <= 16, op,
                    ": bits out of range: need msb_bits >= 1, lsb_bits >= 0 and 2 <= msb_bits + lsb_bits <= 16, ",
                    "got msb_bits=", msb_bits, ", lsb_bits=", lsb_bits);
  const bool per_token = per == "token";
  TORCH_CHECK_VALUE(per_token || per == "head", op, ": per must be 'head' or 'token', got '", std::string(per), "'");

  const at::ScalarType dtype = compute_dtype({x});
  const at::Tensor xc = as_contiguous(x, dtype);
  const int64_t l = x.size(-2), d = x.size(-1);
  int64_t lead = 1;
  for (int64_t i = 0; i < x.dim() - 2; ++i) lead *= x.size(i);
  const int64_t groups = per_token ? lead * l : lead;
  const int64_t group_size = per_token ? d : l * d;

  at::Tensor msb = at::empty(x.sizes(), x.options().dtype(at::kShort));
  at::Tensor lsb = at::empty(x.sizes(), x.options().dtype(at::kShort));
  std::vector<int64_t> scale_sizes(x.sizes().begin(), x.sizes().end());
  scale_sizes[scale_sizes.size() - 2] = per_token ? l : 1;
  scale_sizes.back() = 1;
  at::Tensor scale = at::empty(scale_sizes, x.options().dtype(dtype));

  int16_t* msb_ptr = msb.data_ptr<int16_t>();
  int16_t* lsb_ptr = lsb.data_ptr<int16_t>();
  std::atomic<bool> non_finite{false};
  dispatch_compute(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* x_ptr = xc.data_ptr<T>();
    T* scale_ptr = scale.data_ptr<T>();
    at::parallel_for(0, groups, row_grain(group_size), [&](int64_t begin, int64_t end) {
      const int64_t off = begin * group_size;
      if (!spatten::quantize_msb_lsb_groups(x_ptr + off, end - begin, group_size, static_cast<int>(msb_bits),
                                            static_cast<int>(lsb_bits), msb_ptr + off, lsb_ptr + off,
                                            scale_ptr + begin))
        non_finite = true;
    });
  });
  TORCH_CHECK_VALUE(!non_finite, op, ": x contains NaN or Inf");
  return {msb, lsb, scale};
}

at::Tensor dequantize_msb_lsb_cpu(const at::Tensor& msb, const std::optional<at::Tensor>& lsb,
                                  const at::Tensor& scale, int64_t lsb_bits) {
  constexpr const char* op = "spatten.dequantize_msb_lsb";
  check_dtype(op, "msb", msb, at::kShort);
  check_cpu(op, "msb", msb);
  TORCH_CHECK_VALUE(msb.dim() >= 2, op, ": msb must be [..., L, D] (at least 2 dims), got shape ", msb.sizes());
  at::Tensor lsb_c;
  if (lsb.has_value()) {
    check_dtype(op, "lsb", *lsb, at::kShort);
    check_cpu(op, "lsb", *lsb);
    check_shape(op, "lsb", *lsb, msb.sizes());
    lsb_c = lsb->contiguous();
  }
  check_lsb_bits(op, lsb_bits);
  int64_t scale_rows = 1;
  const at::Tensor scale_c = checked_scale(op, "scale", scale, msb, &scale_rows);
  const at::Tensor msb_c = msb.contiguous();
  const at::ScalarType dtype = scale.scalar_type();
  at::Tensor out = at::empty(msb.sizes(), msb.options().dtype(dtype));
  const int64_t l = msb.size(-2), d = msb.size(-1);
  const int64_t rows = d == 0 ? 0 : msb.numel() / d;
  if (rows == 0) return out;
  // Each row r of msb uses scale[r / rows_per_scale] of the expanded [..., Ls, 1] scale.
  const int64_t rows_per_scale = scale_rows == 1 ? l : 1;

  const int16_t* msb_ptr = msb_c.data_ptr<int16_t>();
  const int16_t* lsb_ptr = lsb_c.defined() ? lsb_c.data_ptr<int16_t>() : nullptr;
  // Tasks start on a scale-group boundary so that r / rows_per_scale stays local to the task.
  const int64_t units = rows / rows_per_scale;
  dispatch_compute(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* scale_ptr = scale_c.data_ptr<T>();
    T* out_ptr = out.data_ptr<T>();
    at::parallel_for(0, units, row_grain(rows_per_scale * d), [&](int64_t begin, int64_t end) {
      const int64_t r0 = begin * rows_per_scale;
      spatten::dequantize_msb_lsb_rows(msb_ptr + r0 * d, lsb_ptr ? lsb_ptr + r0 * d : nullptr,
                                       scale_ptr + r0 / rows_per_scale, (end - begin) * rows_per_scale, d,
                                       rows_per_scale, static_cast<int>(lsb_bits), out_ptr + r0 * d);
    });
  });
  return out;
}

}  // namespace spatten::torch_ops
