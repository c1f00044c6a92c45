// --stats FILE: the timings and resource use of one `moss run`, written as JSON when the VM
// has ended (bench/ reads it).
#pragma once

#include <sys/resource.h>

#include <cstdint>
#include <string>

#include "base/result.h"

namespace moss {

struct RunTimes {  // CLOCK_MONOTONIC ns (broker/clock.h); 0: did not happen.
  uint64_t spawn_ns = 0, first_run_ns = 0, first_exit_ns = 0, agent_connected_ns = 0, command_exited_ns = 0;
};

// At the start: refuses what must not be replaced (a FIFO, a device, a directory) or cannot be
// written (no such directory). An empty path is no file.
Result<void> check_stats_file(const std::string& path);
// Replaces `path` whole (a new file renamed over it; through a symlink, the file it points
// to), with this process's and the vcpu process's (`vcpu`) usage. A failure is a warning.
void write_stats_file(const std::string& path, const RunTimes& times, const rusage& vcpu);

}  // namespace moss
