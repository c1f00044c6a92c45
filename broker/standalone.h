// `moss device KIND ARGS...`: a device worker on its own, as the vhost-user backend of QEMU,
// crosvm or another moss, jailed exactly as `moss run` jails it (security review finding 9).
//
// The command stays as a small supervisor: it starts the worker with spawn_child() (new user,
// mount, pid, ipc, uts, cgroup and net namespaces, the role's rlimits; the worker's main then
// makes what it needs from the host's tree (its disk, its listening socket) and enters the
// empty root and its seccomp policy), forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to it (and
// SIGKILLs it if it has not ended 5 s after one, since a PID 1 that has not yet installed its
// handler ignores them), removes the sockets the jailed worker cannot (it has no unlink), and
// exits with the worker's status (128+N if signal N ended it), as the backend program
// conventions expect of the command a frontend runs.
//
// `--no-sandbox` among ARGS runs the worker unjailed instead (with the loud warning), and
// `--help` and `--print-capabilities`, which read nothing from a peer, run it directly.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "broker/launcher.h"

namespace moss::standalone {

// The child the supervisor starts for `moss device KIND ARGS` (pure but for looking at the
// --disk file's size): the worker at `worker_path` with ARGS as its arguments, but `--fd N`
// becomes `--fd 3` with N passed as the child's fd 3, and the jail the role needs (blk: its
// --num-queues and the disk's size; vsock: its --max-connections).
Result<ChildSpec> worker_spec(const std::string& kind, const std::string& worker_path, const std::vector<std::string>& args);

// Runs `moss device KIND ARGS` (see above); returns the exit status.
int run(const std::string& kind, const std::string& worker_path, std::vector<std::string> args);

}  // namespace moss::standalone
