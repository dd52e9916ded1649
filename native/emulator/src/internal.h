// State shared by the emulator's translation units: the one device lock, memory bookkeeping, faults
// and the kernel runner.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "mcpm_emu/device.h"
#include "mcpm_emu/emulator.h"

#if defined(__SANITIZE_ADDRESS__)
#define MCPM_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MCPM_EMU_ASAN 1
#endif
#endif

namespace mcpm_emu {

// Every runtime call and every kernel runs under this lock: one kernel at a time in the process.
std::recursive_mutex& device_lock();

// Settings, read from the environment at first use.
DeviceConfig& config_ref();
ScheduleConfig& schedule_ref();
Stats& stats_ref();

// The live allocation holding p (end pointer included); false when none.
bool find_allocation(const void* p, uintptr_t* base, size_t* size);

// Redzone damage of an allocation (empty when intact), and its repair.
std::string check_redzones(uintptr_t base, size_t size);
void restore_redzones(uintptr_t base, size_t size);

// Sticky faults.
bool device_faulted();
void raise_fault(const std::string& message);

// Runs a launch now (device lock held); a fault leaves the device faulted.
void execute_kernel(const KernelCall& call);
// Dynamic shared memory a kernel may use (48 KiB unless raised by cudaFuncSetAttribute).
size_t dynamic_smem_limit(const void* func);

}  // namespace mcpm_emu
