// Test hooks (compiled only with MOSS_TEST_HOOKS, which the normal and CI builds turn on and
// a packager turns off): probes that try, from inside a role's sandbox, what the sandbox must
// stop, so tests can prove each property from inside a running worker.
//
//   MOSS_TEST_PROBE=ROLE[,ROLE...] or =all   after the jail is in place, run every probe and
//       print one line per probe on stderr:
//         moss-sandbox-probe: ROLE PROBE allowed
//         moss-sandbox-probe: ROLE PROBE blocked (ENOENT)
//         moss-sandbox-probe: ROLE PROBE blocked (killed by SIGSYS)
//       Each probe runs in a child forked inside the sandbox that loads the role's filter
//       itself, because a probe that seccomp kills cannot report. With "layers" in the
//       value, a second pass ("ROLE-without-seccomp") skips the filter, to show what the
//       namespaces, the empty root and the dropped capabilities stop on their own.
//   MOSS_TEST_FORBIDDEN_SYSCALL=ROLE   right after entering the sandbox the role makes a
//       system call its policy does not allow (syslog), which kills it with SIGSYS.
//       ROLE:on-sigusr2 makes that call when the process gets SIGUSR2 instead, so a test can
//       pick the moment (a VM that runs). ROLE:create-vm-on-sigusr2 instead tries
//       KVM_CREATE_VM on every fd it holds when it gets SIGUSR2, and says so if one worked
//       (the vcpu process forbids it once its VM is set up).
#pragma once

#include <string>
#include <vector>

#include "policies/builtin.h"

namespace moss::policy {
class Filter;
}

namespace moss::sandbox {

inline constexpr char kProbeEnv[] = "MOSS_TEST_PROBE";
inline constexpr char kForbiddenEnv[] = "MOSS_TEST_FORBIDDEN_SYSCALL";
inline constexpr char kProbePrefix[] = "moss-sandbox-probe: ";

// The probes, by name, in the order they run.
std::vector<std::string> probe_names();

#ifdef MOSS_TEST_HOOKS
// `filter`: the role's filter, which each probe's child loads first; null when unjailed.
void run_probes_if_asked(Role role, const policy::Filter* filter);
void call_forbidden_syscall_if_asked(Role role);
#endif

}  // namespace moss::sandbox
