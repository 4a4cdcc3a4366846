#include "server/engine_factory.h"
// Implemented with the CPU engine and, when built with CUDA, the CUDA engine.
