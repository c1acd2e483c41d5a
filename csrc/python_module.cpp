// The Python extension module fusedlstm._C. Importing it loads this shared
// library, which runs the static TORCH_LIBRARY registrations; the module
// itself exposes nothing, so it is built against Python's limited API.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
