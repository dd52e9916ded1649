// CUDA emulator shim: the emulated runtime and device side (native/emulator).
#pragma once
#include "mcpm_emu/device.h"
