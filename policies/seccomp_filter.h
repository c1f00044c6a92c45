// Compiles a Policy (policy.h) into a seccomp filter with libseccomp and loads it.
//
// Default action: kill the whole process (SECCOMP_RET_KILL_PROCESS, seen by the parent as
// "killed by signal 31 (SIGSYS)"); the same for a system call from another architecture
// (i386 int 0x80, x32). A rule with `return E...` fails that call with the errno instead.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"
#include "policies/policy.h"

namespace moss::policy {

class Filter {
 public:
  // Every system call name must be one libseccomp knows for x86_64; errors name the rule's
  // file and line. `trap` (tests only) makes a denied call raise a catchable SIGSYS instead
  // of killing, so a handler can say which call it was.
  static Result<Filter> compile(const Policy& policy, bool trap = false);

  Filter(Filter&& o) noexcept;
  Filter& operator=(Filter&& o) noexcept;
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;
  ~Filter();

  // Installs the filter on the calling process (every thread: TSYNC). Irreversible. Sets
  // no_new_privs, which seccomp requires of an unprivileged process.
  Result<void> load() const;
  // libseccomp's pseudo-filter-code listing of the BPF program (what `moss-policy --bpf` prints).
  Result<std::string> pfc() const;

 private:
  explicit Filter(void* ctx) : ctx_(ctx) {}
  void* ctx_ = nullptr;  // scmp_filter_ctx
};

// A second filter, stacked on the role's (filters only ever add restrictions): from now on an
// ioctl whose command is one of `commands`, on any fd, kills the whole process. For a process
// that is done with its set-up ioctls (moss-vcpu after it made its VM, vCPUs and irqchip):
// they stay in its policy only for the set-up. A hand-written BPF program, loaded with one
// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC) call, the only form of seccomp()
// the vcpu policy allows. Needs no_new_privs (set when the role's filter loaded).
Result<void> forbid_ioctls(std::span<const uint64_t> commands);

}  // namespace moss::policy
