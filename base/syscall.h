// MOSS_SYS(call): runs a system call, retrying on EINTR, and turns a -1 return into an Error
// whose message names the call as written and the errno text, e.g.
//   "ioctl(vm, KVM_CREATE_IRQCHIP, 0) failed: Invalid argument".
#pragma once

#include <cerrno>
#include <string>

#include "base/result.h"

namespace moss {

template <typename F>
auto sys_retry(const char* what, F&& f) -> Result<decltype(f())> {
  for (;;) {
    auto r = f();
    if (r != static_cast<decltype(r)>(-1)) return r;
    if (errno == EINTR) continue;
    int e = errno;  // Before the message's allocation.
    return errno_error_code(e, std::string(what) + " failed");
  }
}

// Like sys_retry but returns EINTR to the caller (for KVM_RUN and waits that must notice signals).
template <typename F>
auto sys_once(const char* what, F&& f) -> Result<decltype(f())> {
  auto r = f();
  if (r != static_cast<decltype(r)>(-1)) return r;
  int e = errno;
  return errno_error_code(e, std::string(what) + " failed");
}

}  // namespace moss

#define MOSS_SYS(call) ::moss::sys_retry(#call, [&] { return (call); })
#define MOSS_SYS_ONCE(call) ::moss::sys_once(#call, [&] { return (call); })
