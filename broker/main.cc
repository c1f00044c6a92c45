// moss: the broker. One per VM; it parses no guest bytes. See docs/ARCHITECTURE.md.
#include <cstdio>
#include <string>
#include <vector>

#include "base/log.h"
#include "broker/cli.h"
#include "broker/exec.h"
#include "broker/run.h"
#include "broker/spore_commands.h"

#ifndef MOSS_VERSION
#define MOSS_VERSION "0.1.0"
#endif

int main(int argc, char** argv) {
  moss::log_init("moss");
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cmd = moss::cli::parse(args);
  if (!cmd) {
    std::fprintf(stderr, "moss: %s\n", cmd.error().message.c_str());
    return moss::kExitUsage;
  }
  switch (cmd->verb) {
    case moss::cli::Command::Verb::kHelp:
      std::fputs(moss::cli::usage(cmd->help_topic).c_str(), stdout);
      return 0;
    case moss::cli::Command::Verb::kVersion:
      std::printf("moss %s\n", MOSS_VERSION);
      return 0;
    case moss::cli::Command::Verb::kRun:
    case moss::cli::Command::Verb::kRestore:
    case moss::cli::Command::Verb::kSporeCreate:
      return moss::run_vm(cmd->run);
    case moss::cli::Command::Verb::kSuspend:
      return moss::suspend_command(*cmd);
    case moss::cli::Command::Verb::kDevice:
      return moss::exec_device(cmd->device, cmd->device_args);
    case moss::cli::Command::Verb::kExec:
      return moss::exec_command(*cmd);
    case moss::cli::Command::Verb::kList:
    case moss::cli::Command::Verb::kStats:
    case moss::cli::Command::Verb::kStop:
    case moss::cli::Command::Verb::kPause:
    case moss::cli::Command::Verb::kResume:
      return moss::control_command(*cmd);
    case moss::cli::Command::Verb::kStoreGc:
    case moss::cli::Command::Verb::kPack:
    case moss::cli::Command::Verb::kUnpack:
    case moss::cli::Command::Verb::kInspect:
      return moss::spore_command(*cmd);
  }
  return moss::kExitUsage;
}
