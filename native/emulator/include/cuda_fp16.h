// CUDA emulator shim: emulated half precision (native/emulator).
#pragma once
#include "mcpm_emu/half.h"
