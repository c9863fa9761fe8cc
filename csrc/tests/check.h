// Minimal assertions for the C++ tests of the CPU twins (no test framework to install).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>

#define MCNET_CHECK(condition)                                                   \
  do {                                                                           \
    if (!(condition)) {                                                          \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

#define MCNET_CHECK_NEAR(a, b, tol) MCNET_CHECK(std::fabs(static_cast<double>(a) - static_cast<double>(b)) <= (tol))
