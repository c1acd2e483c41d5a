// Host stand-in for <cuda_runtime.h> (see prelude.h).
#pragma once
#include "cuda_runtime_api.h"
