// CUDA emulator shim: emulated bfloat16 (native/emulator).
#pragma once
#include "mcpm_emu/half.h"
