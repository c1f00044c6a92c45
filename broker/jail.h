// What the broker decides about a child's sandbox: its role (which names the seccomp policy
// the child loads) and its resource limits. The launcher (launcher.h) applies it; the child
// finishes it (policies/sandbox.h).
#pragma once

#include <cstdint>
#include <string>

#include "policies/builtin.h"
#include "policies/sandbox.h"

namespace moss::jail {

using Limits = sandbox::Limits;

struct Sandbox {
  sandbox::Role role = sandbox::Role("vcpu");
  bool enabled = true;  // false: `moss run --no-sandbox` (debugging only)
  Limits limits;
};

// The vcpu process: `cpus` vCPU threads, vhost-user connections with `queues` queues in all
// (each with an ioeventfd and an irqfd), guest RAM in one memfd of `mem_bytes`.
Sandbox vcpu(uint32_t cpus, size_t devices, size_t queues, uint64_t mem_bytes, bool enabled);
// A device worker's sandbox, as its module (devices/module.h) describes it.
Sandbox worker(sandbox::Role role, const sandbox::Limits& limits, bool enabled);

// The loud warning `--no-sandbox` prints.
std::string no_sandbox_warning();

}  // namespace moss::jail
