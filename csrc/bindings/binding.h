// How a part of `mcnet_rt._C` adds itself: a file in bindings/ defines
//   MCNET_RT_BINDING(limits) { m.attr(...) = ...; }
// and registers itself; module.cpp runs every registered binder. Adding a part touches no shared file.
#pragma once

#include <pybind11/pybind11.h>

namespace mcnet_rt {

using Binder = void (*)(pybind11::module_&);
int register_binder(Binder binder);

}  // namespace mcnet_rt

#define MCNET_RT_BINDING(name)                                                     \
  static void bind_##name(pybind11::module_& m);                                   \
  static const int bind_##name##_registered = ::mcnet_rt::register_binder(&bind_##name); \
  static void bind_##name(pybind11::module_& m)
