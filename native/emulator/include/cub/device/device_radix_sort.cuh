// CUDA emulator shim: emulated CUB radix sort (native/emulator).
#pragma once
#include "mcpm_emu/cub.h"
