// `moss run`: validate the request, open every resource the VM needs, start the vcpu process
// and supervise it until the guest ends. Returns moss's exit status.
#pragma once

#include <string>
#include <vector>

#include "broker/cli.h"

namespace moss {

// Exit statuses of moss itself (a guest command's own status passes through unchanged).
constexpr int kExitUsage = 2;      // Bad command line or bad input file.
constexpr int kExitFailure = 125;  // moss could not run the VM, or the VM failed.

int run_vm(const cli::RunOptions& options);
// `moss device KIND ARGS...`: execs the worker program moss-KIND beside moss; returns only
// on failure.
int exec_device(const std::string& kind, const std::vector<std::string>& args);
// `moss ls`, `moss stats NAME`, `moss stop NAME`.
int control_command(const cli::Command& command);
// `moss suspend NAME --out SPORE`: asks NAME's broker to write the spore (broker/session.h).
int suspend_command(const cli::Command& command);

}  // namespace moss
