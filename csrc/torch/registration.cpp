// The one place where spatten:: op schemas are declared and bound to their CPU adapters.
#include <Python.h>
#include <torch/library.h>

#include "adapters.h"

// `import spatten._C` loads this library, which runs the registrations below. The module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "spatten C++ operators", -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(spatten, m) {
  m.def("topk_indices(Tensor scores, int k) -> Tensor");
  m.def("token_importance(Tensor probs, Tensor? query_mask=None, Tensor? key_mask=None, "
        "Tensor? accumulator=None) -> Tensor");
  m.def("head_importance(Tensor attn_out, Tensor? query_mask=None, Tensor? accumulator=None) -> Tensor");
  m.def("local_value_attention(Tensor probs, Tensor v, int k) -> (Tensor, Tensor, Tensor)");
  m.def("quantize_msb_lsb(Tensor x, int msb_bits, int lsb_bits, str per) -> (Tensor, Tensor, Tensor)");
  m.def("dequantize_msb_lsb(Tensor msb, Tensor? lsb, Tensor scale, int lsb_bits) -> Tensor");
  m.def("progressive_attention(Tensor q, Tensor k_msb, Tensor k_lsb, Tensor k_scale, Tensor v, Tensor? mask, "
        "float threshold, int lsb_bits, float scaling) -> (Tensor, Tensor, Tensor)");
  m.def("attention_with_importance(Tensor q, Tensor k, Tensor v, Tensor? mask, float scaling, "
        "Tensor? query_mask=None) -> (Tensor, Tensor)");
  // Backward kernels, called by the autograd formulas registered in spatten/ops.py.
  m.def("attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? mask, float scaling) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("progressive_attention_backward(Tensor? grad_out, Tensor? grad_probs, Tensor q, Tensor k_msb, "
        "Tensor k_lsb, Tensor k_scale, Tensor v, Tensor probs, Tensor refetch, int lsb_bits, float scaling) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("local_value_attention_backward(Tensor grad_out, Tensor probs, Tensor v, Tensor kept) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(spatten, CPU, m) {
  m.impl("topk_indices", &spatten::torch_ops::topk_indices_cpu);
  m.impl("token_importance", &spatten::torch_ops::token_importance_cpu);
  m.impl("head_importance", &spatten::torch_ops::head_importance_cpu);
  m.impl("local_value_attention", &spatten::torch_ops::local_value_attention_cpu);
  m.impl("quantize_msb_lsb", &spatten::torch_ops::quantize_msb_lsb_cpu);
  m.impl("dequantize_msb_lsb", &spatten::torch_ops::dequantize_msb_lsb_cpu);
  m.impl("progressive_attention", &spatten::torch_ops::progressive_attention_cpu);
  m.impl("attention_with_importance", &spatten::torch_ops::attention_with_importance_cpu);
  m.impl("attention_backward", &spatten::torch_ops::attention_backward_cpu);
  m.impl("progressive_attention_backward", &spatten::torch_ops::progressive_attention_backward_cpu);
  m.impl("local_value_attention_backward", &spatten::torch_ops::local_value_attention_backward_cpu);
}
