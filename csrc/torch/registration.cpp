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
}

TORCH_LIBRARY_IMPL(spatten, CPU, m) {
  m.impl("topk_indices", &spatten::torch_ops::topk_indices_cpu);
}
