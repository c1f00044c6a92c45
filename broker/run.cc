#include "broker/run.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>


#include "base/file.h"
#include "base/log.h"
#include "base/syscall.h"
#include "base/unix_socket.h"
#include "broker/clock.h"
#include "broker/console_sink.h"
#include "broker/control.h"
#include "broker/defaults.h"
#include "broker/host.h"
#include "broker/jail.h"
#include "broker/launcher.h"
#include "broker/standalone.h"
#include "broker/vm_devices.h"
#include "broker/session.h"
#include "broker/stats_file.h"
#include "broker/vcpu_link.h"
#include "broker/vm_vsock.h"
#include "guest/agent/client.h"
#include "guest/moss-init/cmdline.h"
#include "ipc/channel.h"
#include "ipc/vcpu.capnp.h"
#include "ipc/guest_abi.h"
#include "broker/restore.h"
#include "broker/spore_manifest.h"
#include "store/spore.h"
#include "vcpu/bzimage.h"
#include "vcpu/kvm_caps.h"

#ifndef MOSS_DEFAULT_KERNEL
#define MOSS_DEFAULT_KERNEL ""
#endif
#ifndef MOSS_DEFAULT_INITRD
#define MOSS_DEFAULT_INITRD ""
#endif

namespace moss {
namespace {

// The kernel or initrd: a regular file. Opened without blocking, so that a FIFO (or a device
// that blocks on open) is refused at once instead of waiting forever for a writer.
Result<UniqueFd> open_input(const std::string& path, const char* what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    return make_error(sys_message("read", std::string("the ") + what + " " + path, e) + (e == ENOENT ? " (check the path)" : ""), e);
  }
  UniqueFd file(fd);
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(fstat(fd, &st)));
  if (!S_ISREG(st.st_mode)) {
    return make_error(std::string("the ") + what + " " + path + " is not a regular file (it is " + describe_file_type(st.st_mode) + ")");
  }
  MOSS_TRY_VOID(MOSS_SYS(fcntl(fd, F_SETFL, O_RDONLY)));
  return file;
}

// Everything the broker decided and opened before the vcpu process starts.
struct Prepared {
  UniqueFd kvm, kernel, initrd;
  std::string cmdline;
  std::vector<device::Device> devices;  // Planned by their modules (broker/vm_devices.h).
};

// moss-init builds its own copy of the contract; the vcpu process's must be the same.
static_assert(guest::kExitPort == guest_abi::kExitPort);

Result<Prepared> prepare(const cli::RunOptions& o, device::vsock::Host vsock) {
  Prepared p;
  std::string kernel_path = o.kernel.empty() ? MOSS_DEFAULT_KERNEL : o.kernel;
  if (kernel_path.empty()) {
    return make_error("no default kernel was found when moss was built; install linux-image-amd64 and rebuild, or pass --kernel FILE");
  }
  std::string initrd_path = o.initrd;
  if (initrd_path.empty() && !o.no_initrd && o.kernel.empty()) initrd_path = MOSS_DEFAULT_INITRD;

  MOSS_TRY(p.kernel, open_input(kernel_path, "kernel"));
  MOSS_TRY(uint64_t kernel_size, regular_file_size(p.kernel.get(), "the kernel " + kernel_path));
  MOSS_TRY(auto head, read_file_head(p.kernel.get(), boot::kMaxSetupBytes, "the kernel " + kernel_path));
  auto kernel = boot::parse_bzimage(head, kernel_size);
  if (!kernel) return make_error(kernel_path + ": " + kernel.error().message);
  uint64_t initrd_size = 0;
  if (!initrd_path.empty()) {
    MOSS_TRY(p.initrd, open_input(initrd_path, "initrd"));
    MOSS_TRY(initrd_size, regular_file_size(p.initrd.get(), "the initrd " + initrd_path));
    uint8_t probe[1];
    if (initrd_size) MOSS_TRY_VOID(pread_exact(p.initrd.get(), 0, probe, "the initrd " + initrd_path));
  }

  p.cmdline = kBaseCmdline;
  if (!o.append.empty()) p.cmdline += " " + o.append;
  // moss-init connects to the host when its agent is up; the command then goes over that.
  if (o.has_command || !o.create_spore.empty()) p.cmdline += " " + guest::encode_dial(agent::kAgentPort);
  MOSS_TRY_VOID(boot::plan_boot(*kernel, o.mem_bytes, initrd_size, p.cmdline.size()));

  auto meminfo = read_text_file("/proc/meminfo");
  uint64_t host_mem = meminfo ? host::mem_total_from_meminfo(*meminfo) : 0;
  if (host_mem && o.mem_bytes > host_mem) {
    return make_error("--mem " + std::to_string(o.mem_bytes >> 20) + " MiB is more than this host's " +
                      std::to_string(host_mem >> 20) + " MiB of memory");
  }

  MOSS_TRY(p.devices, vmdevices::plan(o, std::move(vsock)));
  MOSS_TRY(p.kvm, host::open_kvm(host::kvm_path()));
  MOSS_TRY_VOID(kvm_check_api(p.kvm.get()));
  const uint32_t max_vcpus = kvm_max_vcpus(p.kvm.get());
  if (o.cpus > max_vcpus) {
    return make_error("--cpus " + std::to_string(o.cpus) + " is more than this host's KVM allows (at most " +
                      std::to_string(max_vcpus) + ")");
  }
  if (kernel->is_linux && host::is_pvm(host::sysfs_root())) {
    return make_error("this host's KVM is PVM (kvm_pvm), which emulates guest kernel code and cannot run an unmodified "
                      "Linux guest; run moss on a host with hardware virtualization, or inside the nested test host "
                      "(tests/nested/run-in-nested-host.sh)");
  }
  return p;
}

std::string self_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

// Opens /dev/null on any of fds 0-2 that is closed, so that no socket or file of ours lands
// there and gets taken for the user's stdin, stdout or stderr.
void ensure_stdio() {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1) continue;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0 && null != fd) {
      dup2(null, fd);
      close(null);
    }
  }
}


// Until the VM runs, a failure leaves behind no --console file that this run created.
struct ConsoleCleanup {
  ConsoleSink* sink;
  bool armed = true;
  ~ConsoleCleanup() {
    if (armed) sink->remove_if_unused();
  }
};

// Prints "moss: SENTENCE" when `r` failed, and says whether it did.
template <typename T>
bool failed(const Result<T>& r) {
  if (r) return false;
  std::fprintf(stderr, "moss: %s\n", r.error().message.c_str());
  return true;
}

// --name: the VM's control socket (none without a name).
Result<std::optional<control::Endpoint>> claim_endpoint(const cli::RunOptions& o) {
  if (o.name.empty()) return std::optional<control::Endpoint>();
  MOSS_TRY(control::Endpoint e, control::Endpoint::claim(control::runtime_dir(), o.name));
  if (e.removed_stale()) LOG_INFO("removed the control socket a crashed run named %s left behind", o.name.c_str());
  return std::optional<control::Endpoint>(std::move(e));
}

// Blocks the signals the session handles, so none is lost between fork and the event loop.
void block_session_signals() {
  sigset_t block;
  sigemptyset(&block);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&block, s);
  sigprocmask(SIG_BLOCK, &block, nullptr);
}

// The vcpu process, started: its pid, the broker's end of its control channel, and when.
struct Vcpu {
  pid_t pid = -1;
  UniqueFd ctl;
  uint64_t spawn_ns = 0;
  UniqueFd ram;
};

// Guest RAM: a memfd the broker keeps (a spore reads it; a restore fills it) and the vcpu
// process maps. Sealed against resizing, since the workers map it too.
Result<UniqueFd> make_guest_ram(uint64_t bytes) {
  MOSS_TRY(int fd, MOSS_SYS(memfd_create("moss-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  UniqueFd ram(fd);
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) return sys_error("size guest RAM (" + std::to_string(bytes >> 20) + " MiB)");
  MOSS_TRY_VOID(MOSS_SYS(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)));
  return ram;
}

// Starts the vcpu process with the VM's fds (every number in its argv and start message is
// the one pass_fd() gave) and sends it the start message.
Result<Vcpu> start_vcpu(const cli::RunOptions& o, Prepared& p, const restore::Loaded* from = nullptr,
                        UniqueFd filled_ram = {}) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return sys_error("create the control channel");
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  UniqueFd ram = std::move(filled_ram);
  if (!ram) {
    MOSS_TRY(ram, make_guest_ram(o.mem_bytes));
  }
  ChildSpec spec;
  spec.path = self_dir() + "/moss-vcpu";
  spec.argv = {"moss-vcpu", "--control-fd", std::to_string(spec.pass_fd(theirs.get()))};
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  auto start = msg.initStart();
  start.setMemBytes(o.mem_bytes);
  start.setCpus(o.cpus);
  start.setCmdline(p.cmdline);
  start.setKvmFd(spec.pass_fd(p.kvm.get()));
  start.setKernelFd(p.kernel ? spec.pass_fd(p.kernel.get()) : -1);
  start.setInitrdFd(p.initrd ? spec.pass_fd(p.initrd.get()) : -1);
  start.setMemFd(spec.pass_fd(ram.get()));
  vmdevices::describe(p.devices, spec, start);
  if (from) {
    // No kernel: the VM continues from the spore's state, RAM already filled.
    auto r = start.initRestore();
    r.setRealtimeClock(o.realtime_clock);
    MOSS_TRY_VOID(sporemf::machine_state_of(from->spore.manifest->root(), r.initState()));
  }
  spec.sandbox = jail::vcpu(o.cpus, p.devices.size(), vmdevices::total_queues(p.devices), o.mem_bytes, !o.no_sandbox);
  Vcpu v;
  v.spawn_ns = monotonic_ns();
  auto pid = spawn_child(spec);
  if (!pid) return make_error("cannot start the vcpu process: " + pid.error().message, pid.error().err);
  v.pid = *pid;
  v.ctl = std::move(ours);
  v.ram = std::move(ram);
  vmdevices::vcpu_started(p.devices);
  p.kvm.reset();  // The broker itself never touches the VM.
  if (auto r = ipc::send_message(v.ctl.get(), mb); !r) {
    LOG_WARN("cannot send the start message: %s", r.error().message.c_str());
  }
  return v;
}

// What a suspend of this VM records besides the vcpu process's state.
SporeSource spore_source(const Prepared& p, uint64_t generation) {
  SporeSource s;
  s.cmdline = p.cmdline;
  s.generation = generation;
  for (const auto& d : p.devices) s.devices.push_back({d.kind, d.record});
  return s;
}

// `moss restore SPORE` and `moss run --from SPORE`: run_vm's steps, with the machine the
// spore holds instead of a kernel. Everything is checked before the vcpu process starts.
int restore_vm(const cli::RunOptions& given) {
  auto loaded = restore::load(given.from, given.store_dir);
  if (failed(loaded)) return kExitFailure;
  cli::RunOptions options = given;  // The spore's machine.
  options.mem_bytes = loaded->mem_bytes;
  options.cpus = loaded->cpus;
  if (failed(check_stats_file(options.stats_file))) return kExitFailure;
  Prepared p;
  p.cmdline = loaded->cmdline;
  {
    auto kvm = host::open_kvm(host::kvm_path());
    if (failed(kvm)) return kExitFailure;
    p.kvm = std::move(*kvm);
  }
  if (failed(kvm_check_api(p.kvm.get()))) return kExitFailure;
  auto contract = loaded->spore.manifest->root().getHost();
  std::vector<uint32_t> caps;
  for (uint32_t c : contract.getKvmCapabilities()) caps.push_back(c);
  auto host = restore::host_facts(p.kvm.get(), caps);
  if (failed(host)) return kExitFailure;
  if (auto ok = sporemf::check_host(contract, *host); !ok) {
    std::fprintf(stderr, "moss: cannot restore %s here: %s\n", given.from.c_str(), ok.error().message.c_str());
    return kExitFailure;
  }
  if (options.cpus > kvm_max_vcpus(p.kvm.get())) {
    std::fprintf(stderr, "moss: the spore's VM has %u vCPUs, more than this host's KVM allows\n", options.cpus);
    return kExitFailure;
  }
  if (options.tty && !isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "moss: -t needs a terminal on stdin\n");
    return kExitUsage;
  }
  auto console = ConsoleSink::open(!options.has_command, options.console_file);
  if (failed(console)) return kExitFailure;
  ConsoleCleanup console_cleanup{&*console};
  // A new CID: two VMs of one spore run side by side (the worker keeps it; the guest re-reads
  // it on TRANSPORT_RESET).
  auto vsock = vmvsock::Plan::prepare(control::runtime_dir(), options.vsock_socket, 0);
  if (failed(vsock)) return kExitFailure;
  auto devices = vmdevices::plan(options, (*vsock)->worker_host());
  if (failed(devices)) return kExitFailure;
  p.devices = std::move(*devices);
  SporeSource source = spore_source(p, loaded->generation);
  if (auto ok = restore::check_devices(loaded->spore.manifest->root(), source.devices); !ok) {
    std::fprintf(stderr, "moss: cannot restore %s with these disks: %s\n", given.from.c_str(), ok.error().message.c_str());
    return kExitFailure;
  }
  auto ram = make_guest_ram(options.mem_bytes);
  if (failed(ram)) return kExitFailure;
  if (failed(restore::fill_ram(*loaded, ram->get()))) return kExitFailure;
  if (options.no_sandbox) std::fputs(jail::no_sandbox_warning().c_str(), stderr);
  auto endpoint = claim_endpoint(options);
  if (failed(endpoint)) return kExitFailure;
  block_session_signals();
  auto workers = vmdevices::start_workers(p.devices, self_dir(), !options.no_sandbox);
  if (failed(workers)) return kExitFailure;
  auto vcpu = start_vcpu(options, p, &*loaded, std::move(*ram));
  if (failed(vcpu)) {
    vmdevices::kill_workers(*workers);
    return kExitFailure;
  }
  console_cleanup.armed = false;
  LOG_INFO("restoring %s as generation %llu", given.from.c_str(), static_cast<unsigned long long>(loaded->generation));
  // The new generation goes to the guest's agent once it answers (Session::run,
  // broker/restored_agent.h), before any command runs.
  Session session(options, StartedVcpu{vcpu->pid, std::move(vcpu->ctl), vcpu->spawn_ns, std::move(vcpu->ram)},
                  std::move(*workers), std::move(*endpoint), std::move(*console), std::move(*vsock), std::move(source));
  return session.run();
}

}  // namespace

// The steps of `moss run`: check what can be checked, prepare the host side, plan the
// devices, start their workers, start the vcpu process, then supervise them all.
int run_vm(const cli::RunOptions& options) {
  ensure_stdio();
  // A reader of our stdout that goes away is an EPIPE for the guest program, not our death.
  signal(SIGPIPE, SIG_IGN);
  if (!options.from.empty()) return restore_vm(options);
  if (options.tty && !isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "moss: -t needs a terminal on stdin\n");
    return kExitUsage;
  }
  if (failed(check_stats_file(options.stats_file))) return kExitFailure;
  // moss spore create: the spore must not exist yet (checked again when it is written).
  if (!options.create_spore.empty() && access(options.create_spore.c_str(), F_OK) == 0) {
    std::fprintf(stderr, "moss: the spore %s exists already; spore create writes a new one\n", options.create_spore.c_str());
    return kExitFailure;
  }
  auto console = ConsoleSink::open(!options.has_command && options.create_spore.empty(), options.console_file);
  if (failed(console)) return kExitFailure;
  ConsoleCleanup console_cleanup{&*console};
  // Every VM has a vsock device (with a command, the way its agent is reached).
  auto vsock = vmvsock::Plan::prepare(control::runtime_dir(), options.vsock_socket,
                                      options.has_command || !options.create_spore.empty() ? agent::kAgentPort : 0);
  if (failed(vsock)) return kExitFailure;
  auto prepared = prepare(options, (*vsock)->worker_host());
  if (failed(prepared)) return kExitFailure;
  if (options.no_sandbox) std::fputs(jail::no_sandbox_warning().c_str(), stderr);
  auto endpoint = claim_endpoint(options);
  if (failed(endpoint)) return kExitFailure;
  block_session_signals();
  auto workers = vmdevices::start_workers(prepared->devices, self_dir(), !options.no_sandbox);
  if (failed(workers)) return kExitFailure;
  auto vcpu = start_vcpu(options, *prepared);
  if (failed(vcpu)) {
    vmdevices::kill_workers(*workers);
    return kExitFailure;
  }
  console_cleanup.armed = false;  // The VM runs: the console file is its.
  Session session(options, StartedVcpu{vcpu->pid, std::move(vcpu->ctl), vcpu->spawn_ns, std::move(vcpu->ram)}, std::move(*workers),
                  std::move(*endpoint), std::move(*console), std::move(*vsock), spore_source(*prepared, 0));
  return session.run();
}

int control_command(const cli::Command& command) {
  std::string dir = control::runtime_dir();
  using V = cli::Command::Verb;
  if (command.verb != V::kList) {
    if (auto r = control::check_name(command.vm_name); !r) {
      std::fprintf(stderr, "moss: %s\n", r.error().message.c_str());
      return kExitUsage;
    }
  }
  // A runtime directory that is not ours is refused here, with its reason (a missing one
  // just holds no VM).
  if (auto d = control::open_runtime_dir(dir, /*create=*/false); !d && d.error().err != ENOENT) {
    std::fprintf(stderr, "moss: %s\n", d.error().message.c_str());
    return kExitFailure;
  }
  if (command.verb == V::kList) {
    std::string out = control::table_header();
    for (const auto& name : control::running_names(dir)) {
      auto s = control::query_stats(dir, name);
      if (s) out += control::table_row(*s);  // One that ended meanwhile is just not listed.
    }
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  Result<void> outcome;
  if (command.verb == V::kStats) {
    auto s = control::query_stats(dir, command.vm_name);
    if (s) std::fputs(control::to_json(*s).c_str(), stdout);
    else outcome = s.error();
  } else if (command.verb == V::kPause || command.verb == V::kResume) {
    outcome = control::request_pause(dir, command.vm_name, command.verb == V::kPause);
  } else {
    outcome = control::request_stop(dir, command.vm_name, kStopGraceSeconds * 2 + kExitGraceSeconds * 2);
  }
  if (!outcome) {
    // No such VM, or it could not do it: a failure of moss's, like any other (README).
    std::fprintf(stderr, "moss: %s\n", outcome.error().message.c_str());
    return kExitFailure;
  }
  return 0;
}

int suspend_command(const cli::Command& command) {
  std::string dir = control::runtime_dir();
  control::SuspendArgs args;
  args.keep_running = command.keep_running;
  // The broker runs elsewhere (its own working directory and environment): it is given
  // absolute paths, the store resolved here.
  auto spore = store::absolute_path(command.spore_output);
  Result<std::string> store_dir = command.store_dir.empty() ? store::default_store_dir() : store::absolute_path(command.store_dir);
  Result<std::string> outcome = make_error("");
  if (!spore) outcome = spore.error();
  else if (!store_dir) outcome = store_dir.error();
  else if (::access(spore->c_str(), F_OK) == 0) outcome = make_error("the spore " + *spore + " exists already; suspend writes a new one");
  else {
    args.spore = *spore;
    args.store = *store_dir;
    outcome = control::request_suspend(dir, command.vm_name, args);
  }
  if (!outcome) {
    std::fprintf(stderr, "moss: %s\n", outcome.error().message.c_str());
    return kExitFailure;
  }
  std::printf("%s\n", outcome->c_str());
  return 0;
}

int exec_device(const std::string& kind, const std::vector<std::string>& args) {
  return standalone::run(kind, self_dir() + "/moss-" + kind, args);
}

}  // namespace moss
