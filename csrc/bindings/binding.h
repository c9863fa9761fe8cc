// How each op family adds its launchers to `mcnet_rt._C`: a file in bindings/ defines
//   MCNET_RT_BINDING(warp) { m.def(...); }
// and registers itself; module.cpp runs every registered binder. Adding an op family touches no shared file.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "mcnet_rt/common.h"
#include "mcnet_rt/runtime.h"

namespace mcnet_rt {

using Binder = void (*)(pybind11::module_&);
int register_binder(Binder binder);

// Device pointers and streams cross the Python boundary as integers (torch's data_ptr() and cuda_stream).
inline void* pointer(std::uintptr_t address) { return reinterpret_cast<void*>(address); }

// Turns a launcher's status into a Python exception naming the op.
void check_status(int status, const char* op, bool cuda);

}  // namespace mcnet_rt

#define MCNET_RT_BINDING(name)                                                     \
  static void bind_##name(pybind11::module_& m);                                   \
  static const int bind_##name##_registered = ::mcnet_rt::register_binder(&bind_##name); \
  static void bind_##name(pybind11::module_& m)
