// Control of the CUDA emulator from tests and tools: the emulated device, the schedule of fibers,
// race checking, faults and statistics. Every setting also has an environment variable, read once
// when the emulator first starts:
//   MCPM_EMU_DEVICES=N          devices the runtime reports (default 1; 0 emulates a machine without one)
//   MCPM_EMU_MEMORY_MB=N        device memory (default 1024)
//   MCPM_EMU_SMS=N              multiprocessors (default 8; kernels size their grids from it)
//   MCPM_EMU_SCHEDULE=S         fiber order between barriers: forward | reverse | random[:seed]
//   MCPM_EMU_RACE_CHECK=1       run every kernel twice (forward, then reverse with blocks reversed) and
//                               fault when the memory it can reach differs: a missing barrier
//   MCPM_EMU_FAULT_ABORT=1      abort the process at the first kernel fault (for a debugger)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mcpm_emu {

struct DeviceConfig {
  int devices = 1;
  std::string name = "MiniCPM4 emulated sm_80";
  int major = 8, minor = 0;
  int multiprocessors = 8;
  size_t memory_bytes = size_t{1} << 30;
  size_t smem_per_block = 48 * 1024;            // without opt-in
  size_t smem_per_block_optin = 163 * 1024;     // A100
  size_t smem_per_multiprocessor = 164 * 1024;  // A100
};

enum class Order { Forward, Reverse, Random };

struct ScheduleConfig {
  Order order = Order::Forward;
  uint64_t seed = 1;
  bool race_check = false;
};

struct Stats {
  uint64_t launches = 0;       // kernel executions (a race-checked launch counts twice)
  uint64_t blocks = 0;
  uint64_t threads = 0;
  uint64_t switches = 0;       // fiber switches
  uint64_t race_checks = 0;    // launches compared under two schedules
  uint64_t graph_launches = 0;
  uint64_t captured_ops = 0;
};

DeviceConfig device_config();
// Replaces the emulated device. Only while no device memory is allocated.
void set_device_config(const DeviceConfig& config);
ScheduleConfig schedule_config();
void set_schedule_config(const ScheduleConfig& config);

// The message of the sticky fault, empty when none; clear_fault() resets the device for the next test
// (on hardware a fault needs a new process).
std::string last_fault();
void clear_fault();

Stats stats();
// Bytes of device memory allocated now.
size_t allocated_bytes();

}  // namespace mcpm_emu
