// Device modules: everything the broker and the vcpu process need to know about a kind of
// device, kept with the device (devices/<kind>/module.{h,cc}, a small library per kind that
// the broker links; it never links the worker's device code).
//
// A module turns what the user asked for into a planned Device: the worker process to start
// (program, argv, the fds it is given and the numbers they have there, its sandbox role and
// rlimits, its control channel), and the virtio device the vcpu process shows the guest for
// it (virtio id, PCI class, config size, queue layout), with the vcpu process's end of the
// vhost-user connection. The broker starts every planned worker the same way and hands every
// guest device to the vcpu process in one list (ipc/vcpu.capnp VhostUserDevice); it has no
// code of its own for any kind. docs/ARCHITECTURE.md has the recipe for adding a device.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "ipc/vhost_user_device.h"
#include "policies/builtin.h"
#include "policies/sandbox.h"

namespace moss::device {

// The facts of the VM a device is planned for.
struct Vm {
  uint32_t cpus = 1;
  uint64_t mem_bytes = 0;
  bool jailed = true;  // false: --no-sandbox
};

// A worker process as its module plans it; the broker starts it jailed (broker/launcher.h).
struct WorkerPlan {
  std::string program;            // Its binary's file name, found beside moss: "moss-blk".
  std::string description;        // "blk worker for disk.img"; messages say "the " + description.
  std::vector<std::string> argv;  // argv[0] included; fd numbers come from pass().
  sandbox::PassedFds fds;         // In order; each lands at the number pass() returned.
  sandbox::Role role = sandbox::Role("blk");  // Names its seccomp policy (policies/ROLE.policy).
  sandbox::Limits limits;
  // The broker's end of the worker's control channel (ipc/worker.capnp), or invalid.
  UniqueFd control;

  // Gives the worker `fd`, kept open by the plan until the worker has started; returns the
  // number it has in the worker.
  int pass(UniqueFd fd) {
    int n = fds.pass(fd.get());
    owned_.push_back(std::move(fd));
    return n;
  }
  // Gives the worker a fd whose owner keeps it open until the worker has started.
  int pass_borrowed(int fd) { return fds.pass(fd); }
  // Passes `fd` and appends "OPTION N" to argv (N: its number in the worker).
  void pass_as(std::string option, UniqueFd fd) { option_value(std::move(option), std::to_string(pass(std::move(fd)))); }
  // Appends "OPTION VALUE" to argv.
  void option_value(std::string option, std::string value) {
    argv.push_back(std::move(option));
    argv.push_back(std::move(value));
  }
  // The worker runs: the broker closes its copies of the fds passed.
  void started() { owned_.clear(); }

 private:
  std::vector<UniqueFd> owned_;
};

// One device of a VM, planned.
struct Device {
  std::string kind;  // Its module's: "blk", "vsock", "null". Workers are told apart by it.
  std::string name;  // For messages: "disk 1 (disk.img)", "the vsock device".
  std::optional<WorkerPlan> worker;  // None for an external backend (--vhost-user-blk).
  GuestDevice guest;  // How the vcpu process shows it to the guest (ipc/vhost_user_device.h).
  UniqueFd vhost_user;  // The vcpu process's end of the vhost-user connection.
  // What a spore records of the device (store/spore.capnp Device.config), taken while the VM
  // is paused for it: for blk, the disk's size and identity. None: nothing (empty config).
  std::function<Result<std::vector<uint8_t>>()> record;
};

// How a worker started by hand (`moss device KIND ARGS`) was told its options: the value of
// option NAME ("--name V" or "--name=V"), or nullopt.
using ArgLookup = std::function<std::optional<std::string>(std::string_view name)>;

// What a module says of a device whose worker the broker starts.
struct WorkerDevice {
  std::string kind;         // Device::kind
  std::string name;         // Device::name
  GuestDevice guest;        // Device::guest
  std::string program;      // WorkerPlan::program, and argv[0]
  std::string description;  // WorkerPlan::description
  sandbox::Role role;  // WorkerPlan::role
  sandbox::Limits limits;
  bool control = true;  // Whether the worker gets a control channel.
};
// Plans it with a fresh vhost-user connection (the vcpu process's end in Device::vhost_user,
// the worker's passed as "--fd N") and, with `control`, a control channel (the broker's end in
// WorkerPlan::control, the worker's passed as "--control-fd N"). The module then appends its
// own fds and options to the plan's argv.
Result<Device> plan_worker(WorkerDevice d);

// The limits every worker starts from, for a worker holding up to `fds` descriptors beyond
// the 64 any worker may (stdio, its vhost-user socket and control channel, the event loop and
// libevent's signal pipe, up to 8 guest memory regions, the few fds of its own a device opens
// before the jail): 16 tasks (one thread: clone is in no worker's policy; room for the test
// hooks' probes, which fork one child at a time), 64 MiB of file (a worker writes no file of
// its own unless its module says so; only its stderr can be one, a file the user sent the
// broker's stderr to, and RLIMIT_FSIZE bounds the offset of every write to it, so a little
// room rather than none), no locked memory. A module raises what its device needs.
sandbox::Limits worker_limits(uint64_t fds);
inline constexpr uint64_t kMiB = 1ull << 20;

// A worker's numeric option as `arg` gives it (`moss device KIND ARGS`): `fallback` if absent
// or not a decimal number, at most `max`.
uint64_t number_arg(const ArgLookup& arg, std::string_view name, uint64_t fallback, uint64_t max);
// A decimal number, all of `text`; nullopt for anything else.
std::optional<uint64_t> parse_number(std::string_view text);

// A connected pair of stream sockets for a vhost-user connection: {vcpu's end, worker's}.
Result<std::pair<UniqueFd, UniqueFd>> vhost_user_pair();
// A worker control channel (SOCK_SEQPACKET): {broker's end, worker's}.
Result<std::pair<UniqueFd, UniqueFd>> control_pair();

// "key=value,flag" options of --device KIND,OPTIONS, in order.
struct Option {
  std::string key;
  std::optional<std::string> value;
};
std::vector<Option> split_options(std::string_view text);

// A kind of device.
class Module {
 public:
  virtual ~Module() = default;
  virtual std::string_view kind() const = 0;
  // Plans one device from `--device KIND,OPTIONS` (OPTIONS: what follows "KIND,").
  virtual Result<Device> plan(std::string_view options, const Vm& vm) const = 0;
  // Its worker's sandbox: the role of its kind's name (policies/KIND.policy).
  sandbox::Role role() const { return sandbox::Role(kind()); }
  // Its worker started by hand (moss device KIND ARGS): the limits of its sandbox, and the
  // options naming sockets it makes (removed when it exits: its jail cannot).
  virtual sandbox::Limits standalone_limits(const ArgLookup& arg) const = 0;
  virtual std::vector<std::string> socket_options() const { return {"--socket-path"}; }

  // How a sentence names one device of this kind ("disk"; "s" makes the plural) and the
  // option that gives one ("--disk"), for a restore given other devices than its spore had.
  virtual std::string noun() const { return std::string(kind()) + " device"; }
  virtual std::string option() const { return "--device " + std::string(kind()); }
  // A restore's check of one device against its spore: `recorded` is what Device::record gave
  // at the suspend (store/spore.capnp Device.config, from an untrusted file), `given` what the
  // device planned for the restore gives now; both empty for a kind that records nothing (or
  // a device that cannot be read, such as an external backend). `nth` counts this kind's
  // devices from 1. Ok if the restored guest may take it for the device it had; by default,
  // when the two records are the same bytes.
  virtual Result<void> check_recorded(std::span<const uint8_t> recorded, std::span<const uint8_t> given,
                                      unsigned nth) const;
};

}  // namespace moss::device
