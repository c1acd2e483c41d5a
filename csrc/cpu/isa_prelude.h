// The standard library and ATen core headers, for the ISA target headers
// (avx2_target.h, avx512_target.h) to include BEFORE their `#pragma GCC
// target`. Under the pragma, GCC compiles every function defined after it
// for the target, but not the special members it declares implicitly (an
// implicit destructor, say). From GCC 13, libstdc++ marks some allocator
// members always_inline, so an implicit std::string destructor defined
// outside the target cannot inline a ~allocator defined inside it, and the
// build fails ("inlining failed in call to 'always_inline' ...: target
// specific option mismatch"). Included here first, the library and ATen's
// core are compiled for the baseline ISA, as in every other file of the
// extension; only our kernels and at::vec, which need the target, come
// after the pragma. None of these headers pulls in at::vec or sleef, whose
// specialisations the target headers' macros select.
#pragma once

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/ScalarType.h>
#include <ATen/core/Tensor.h>

#include "cpu/asan_annotations.h"
