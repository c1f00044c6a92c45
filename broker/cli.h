// Command-line parsing for `moss`. Pure: argv in, a Command or a one-sentence usage error out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/blk/module.h"

namespace moss::cli {

// A virtio-blk disk (--disk, --vhost-user-blk): the blk module plans it.
using Disk = device::blk::Disk;

// --device KIND[,OPTIONS]: a device of any kind a module handles (devices/modules.h); its
// module parses OPTIONS. For test devices (null); not in the usage text.
struct DeviceArg {
  std::string kind;
  std::string options;
};

struct RunOptions {
  std::string kernel;        // Empty: the default kernel found at build time.
  std::string initrd;        // Empty: the default initramfs (only with the default kernel).
  bool no_initrd = false;    // --initrd none
  std::string append;        // Extra kernel command line.
  uint64_t mem_bytes = 512ull << 20;
  uint32_t cpus = 1;
  std::string stats_file;    // --stats FILE: JSON figures for bench/.
  std::vector<Disk> disks;   // In guest order: /dev/vda first.
  std::vector<DeviceArg> devices;  // After the disks, in order.
  std::string name;          // --name N: a control socket so that moss ls/stats/stop find it.
  bool no_sandbox = false;   // --no-sandbox: children run unjailed (debugging only; warns).
  bool has_command = false;  // "--" was given.
  std::vector<std::string> command;  // Run in the guest through its agent (guest/agent/).
  bool tty = false;                  // -t: the command gets a pseudo-terminal.
  std::vector<std::string> env;      // --env K=V, added to the guest's default environment.
  std::string workdir;               // --workdir DIR in the guest; empty: "/".
  // --vsock-socket PATH: the VM's hybrid vsock socket (CONNECT <port> / OK); guest
  // connections to host port N go to PATH_N. Empty: vsock in a private directory of the
  // runtime directory, named by the VM's CID.
  std::string vsock_socket;
  std::string console_file;          // --console FILE: the guest console's output, appended.
  // --boot-timeout SECONDS: how long a guest has, with a command, to boot and connect its
  // agent before the VM is stopped (an initramfs without moss-init never does); 0: forever.
  uint32_t boot_timeout_s = 300;
  bool help = false;  // --help or -h among the options: print run's usage instead.
  // Spores: `moss run --from SPORE` and `moss restore SPORE` continue the VM a spore holds
  // (its RAM, vCPUs and devices; mem_bytes and cpus then come from it).
  std::string from;             // The spore; empty: boot a kernel.
  std::string store_dir;        // --store DIR; empty: the default store (store::default_store_dir()).
  bool realtime_clock = false;  // --clock realtime: step the guest's clock by the time the spore slept.
  // `moss spore create SPORE`: boot, wait for the agent, suspend to this spore, stop.
  std::string create_spore;
};

struct Command {
  enum class Verb { kRun, kDevice, kList, kStats, kStop, kPause, kResume, kHelp, kVersion,
                    kStoreGc, kPack, kUnpack, kInspect, kSuspend, kRestore, kSporeCreate, kExec };
  Verb verb = Verb::kHelp;
  RunOptions run;
  // moss device KIND ARGS...: run a device worker standalone (its own program parses ARGS).
  std::string device;
  std::vector<std::string> device_args;
  std::string vm_name;  // moss stats|stop|pause|resume|exec NAME
  // moss exec NAME [-t] [--env K=V]... [--workdir DIR] -- CMD: run.command, .tty, .env, .workdir.
  // kHelp: whose usage to print ("" for moss's own; "run", "ls", "stats", "stop", "pause",
  // "resume", "device"), from `moss VERB --help` (or -h) and `moss help VERB`.
  std::string help_topic;
  // moss store gc | pack SPORE -o FILE | unpack FILE -o DIR | inspect SPORE (spore_cli.cc).
  std::string spore_input;   // SPORE (pack, inspect) or FILE (unpack).
  std::string spore_output;  // -o
  std::string store_dir;     // --store DIR; empty: the default store.
  // moss suspend NAME --out SPORE [--keep-running] (vm_name, spore_output, store_dir).
  bool keep_running = false;
  // moss restore SPORE and moss spore create SPORE are runs: their options are in `run`
  // (run.from, run.create_spore).
};

Result<Command> parse(const std::vector<std::string>& args);
// The spore verbs (broker/spore_cli.cc): whether args[0] is one, their parser, their usage
// ("" for a topic that is not theirs).
bool is_spore_verb(const std::string& verb);
Result<Command> parse_spore_command(const std::vector<std::string>& args);
std::string spore_usage(const std::string& topic);
// "512M", "2G", "1024" (MiB, like QEMU's -m), "65536K".
Result<uint64_t> parse_size(const std::string& text);
// "PATH" or "PATH,ro" (--disk).
Result<Disk> parse_disk(const std::string& text);
// "KIND[,OPTIONS]" (--device) of a kind devices/modules.h knows; its module parses OPTIONS.
Result<DeviceArg> parse_device(const std::string& text);
// "SOCKET" or "SOCKET,peer-uid=N" (--vhost-user-blk).
Result<Disk> parse_vhost_user_disk(const std::string& text);
std::string usage();
// One verb's usage (`moss run --help`); usage() for "" or a verb it does not know.
std::string usage(const std::string& topic);

}  // namespace moss::cli
