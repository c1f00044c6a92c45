// `moss exec NAME [-t] [--env K=V] [--workdir DIR] -- CMD`: runs CMD in a running named VM
// through its guest agent, exactly as `moss run -- CMD` runs it (AgentCommand,
// broker/exec_session.h): streams, exit status, -t, --env, --workdir, signals.
//
// The agent connection comes from the VM's broker over its control socket (which is the VM's
// access control: only its user reaches it): the broker connects to the vsock worker's hybrid
// socket, sends "CONNECT <agent port>\n" and passes the socket back (SCM_RIGHTS); this process
// reads the worker's "OK" and runs the program. While nothing listens in the guest yet (a VM
// still booting, or an agent making its listener again after a restore), it asks again every
// 50 ms for up to kExecConnectTimeout.
#pragma once

#include <chrono>
#include <string>

#include "base/fd.h"
#include "base/result.h"
#include "broker/cli.h"

namespace moss {

inline constexpr std::chrono::milliseconds kExecConnectTimeout{30000};

// A connection to the agent of the VM `name` in the runtime directory `dir`, the worker's OK
// read: ready for the agent protocol. Errors are one sentence.
Result<UniqueFd> connect_vm_agent(const std::string& dir, const std::string& name, std::chrono::milliseconds timeout);

// moss exec: CMD's status, or kExitUsage / kExitFailure with one sentence on stderr.
int exec_command(const cli::Command& command);

}  // namespace moss
