// Compiles a Policy (policy.h) into a seccomp filter with libseccomp and loads it.
//
// Default action: kill the whole process (SECCOMP_RET_KILL_PROCESS, seen by the parent as
// "killed by signal 31 (SIGSYS)"); the same for a system call from another architecture
// (i386 int 0x80, x32). A rule with `return E...` fails that call with the errno instead.
#pragma once

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

}  // namespace moss::policy
