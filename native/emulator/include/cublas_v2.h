// CUDA emulator shim: emulated cuBLAS (native/emulator).
#pragma once
#include "mcpm_emu/cublas.h"
