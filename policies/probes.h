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
//       A role may add probes of its own on what it made before its filter loaded (moss-blk:
//       its io_uring), run in the process itself after enter() (run_own_probes_if_asked).
//   MOSS_TEST_FORBIDDEN_SYSCALL=ROLE   right after entering the sandbox the role makes a
//       system call its policy does not allow (syslog), which kills it with SIGSYS.
//       ROLE:on-sigusr2 makes that call when the process gets SIGUSR2 instead, so a test can
//       pick the moment (a VM that runs). ROLE:create-vm-on-sigusr2 instead tries
//       KVM_CREATE_VM on every fd it holds when it gets SIGUSR2, and says so if one worked
//       (the vcpu process forbids it once its VM is set up).
#pragma once

#include <functional>
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

// A role's own probe: returns 0 when the forbidden thing worked, or the errno that stopped it.
struct OwnProbe {
  std::string name;
  std::function<int()> run;
};

// Runs `probes` in this (already sandboxed) process when MOSS_TEST_PROBE asks for `role`, and
// prints one line each as above. Does nothing in a build without MOSS_TEST_HOOKS.
void run_own_probes_if_asked(Role role, const std::vector<OwnProbe>& probes);

#ifdef MOSS_TEST_HOOKS
// `filter`: the role's filter, which each probe's child loads first; null when unjailed.
void run_probes_if_asked(Role role, const policy::Filter* filter);
void call_forbidden_syscall_if_asked(Role role);
#endif

}  // namespace moss::sandbox
