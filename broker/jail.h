// What the broker decides about a child's sandbox: its role (which names the seccomp policy
// the child loads) and its resource limits. The launcher (launcher.h) applies it; the child
// finishes it (policies/sandbox.h).
#pragma once

#include <cstdint>
#include <string>

#include "policies/builtin.h"

namespace moss::jail {

// RLIMIT_* values, soft = hard (the child cannot raise them: no CAP_SYS_RESOURCE).
struct Limits {
  uint64_t nofile = 0;   // open fds
  uint64_t nproc = 0;    // tasks of the child's uid in its user namespace: its threads
  uint64_t fsize = 0;    // the largest file offset it may write or truncate to
  uint64_t memlock = 0;  // locked memory
};

struct Sandbox {
  sandbox::Role role = sandbox::Role::kVcpu;
  bool enabled = true;  // false: `moss run --no-sandbox` (debugging only)
  Limits limits;
};

// The vcpu process: `cpus` vCPU threads, `disks` vhost-user connections (each with an
// ioeventfd and an irqfd per queue, one queue per vCPU), guest RAM in one memfd of
// `mem_bytes`.
Sandbox vcpu(uint32_t cpus, size_t disks, uint64_t mem_bytes, bool enabled);
// A moss-blk worker serving `queues` queues on a disk of `disk_bytes`.
Sandbox blk(uint32_t queues, uint64_t disk_bytes, bool enabled);
// A moss-vsock worker carrying at most `max_connections` streams at once (its
// --max-connections; 256 unless told). Started by moss run it keeps no host directory (the
// broker connects for it); started by hand it keeps its --uds-path's (policies/sandbox.h).
Sandbox vsock(bool enabled, uint32_t max_connections = 256);
// A moss-null worker (devices/null/: the test device) with `queues` request queues.
Sandbox null_device(uint32_t queues, bool enabled);
// The size of a disk image or block device (0 if it cannot be told).
uint64_t disk_bytes(int fd);

// The loud warning `--no-sandbox` prints.
std::string no_sandbox_warning();

}  // namespace moss::jail
