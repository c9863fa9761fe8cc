#include "binding.h"
#include "mcnet_rt/limits.h"

namespace py = pybind11;

MCNET_RT_BINDING(limits) {
  py::dict codes;
  py::list cuda, cpu;
  for (const mcnet_rt::DTypeInfo& t : mcnet_rt::kDTypes) {
    codes[t.name] = static_cast<int>(t.code);
    if (t.cuda) cuda.append(t.name);
    if (t.cpu) cpu.append(t.name);
  }
  py::dict limits;
  limits["dtype_codes"] = codes;
  limits["cuda_dtypes"] = py::tuple(cuda);
  limits["cpu_dtypes"] = py::tuple(cpu);
  limits["max_elements"] = mcnet_rt::kMaxElements;
  limits["max_attention_channels"] = mcnet_rt::kMaxAttentionChannels;
  m.attr("limits") = limits;
}
