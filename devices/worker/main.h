// The program every device worker is: one function that parses the command line (the shared
// backend options of vhost-user/backend_cli.h, --control-fd included, and the device's own),
// answers --help and --print-capabilities, takes the sockets it was handed, lets the device
// open its resources, makes the --socket-path listener, enters the sandbox once
// (policies/sandbox.h), then serves on the Runtime until the frontend (--fd), a signal or the
// broker ends it. A device's main is a call to worker_main() with what is its own.
//
// Exit status: 0 (served, or ended by a signal or the broker's shutdown), 1 (could not run, or
// the frontend was dropped for an error), 2 (bad usage).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/worker/runtime.h"
#include "policies/sandbox.h"
#include "vhost-user/backend_cli.h"

namespace moss::runtime {

// What a device opened before the sandbox.
struct Prepared {
  WorkerSpec spec;
  std::vector<std::string> keep_dirs;  // Host directories the jail keeps (sandbox::enter).
  // In the sandbox, before serving: the device's own watches and test probes. What it returns
  // lives until the loop ends. Optional.
  std::function<Result<std::shared_ptr<void>>(Runtime&)> start;
};

struct Program {
  const char* name;  // "moss-blk": log prefix and messages.
  sandbox::Role role;
  std::function<std::string()> usage;
  std::function<std::string()> capabilities;  // The --print-capabilities JSON.
};

using PrepareFn = std::function<Result<Prepared>(bool jailed)>;

// The part after parsing. `parsed` is the device's options' shared part, or the usage error.
int run_worker(const Program& program, const Result<const vhost_user::BackendArgs*>& parsed, const PrepareFn& prepare);

// Parses argv with `parse` (a device's parse_cli: args -> Result<Options>, Options deriving
// from BackendArgs) and runs the worker; `prepare(options, jailed)` opens the device's
// resources.
template <typename Parse, typename PrepareOptions>
int worker_main(int argc, char** argv, const Program& program, Parse parse, PrepareOptions prepare) {
  std::vector<const char*> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  auto parsed = parse(std::span<const char* const>(args));
  if (!parsed.ok()) return run_worker(program, parsed.error(), nullptr);
  const auto& options = *parsed;
  return run_worker(program, static_cast<const vhost_user::BackendArgs*>(&options),
                    [&](bool jailed) { return prepare(options, jailed); });
}

}  // namespace moss::runtime
