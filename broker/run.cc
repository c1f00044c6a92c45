#include "broker/run.h"

#include <fcntl.h>
#include <signal.h>
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


#include "base/disk_lock.h"
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
#include "broker/session.h"
#include "broker/stats_file.h"
#include "broker/vcpu_link.h"
#include "broker/vm_vsock.h"
#include "agent/client.h"
#include "moss-init/cmdline.h"
#include "ipc/channel.h"
#include "ipc/vcpu.capnp.h"
#include "vcpu/bzimage.h"
#include "vcpu/kvm.h"

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
    return make_error(std::string("cannot read the ") + what + " " + path + ": " + strerror(errno) +
                      (errno == ENOENT ? std::string(" (check the path)") : std::string()), errno);
  }
  UniqueFd file(fd);
  struct stat st;
  MOSS_CHECK(MOSS_SYS(fstat(fd, &st)));
  if (!S_ISREG(st.st_mode)) {
    return make_error(std::string("the ") + what + " " + path + " is not a regular file (it is " + describe_file_type(st.st_mode) + ")");
  }
  MOSS_CHECK(MOSS_SYS(fcntl(fd, F_SETFL, O_RDONLY)));
  return file;
}

// Everything the broker decided and opened before the vcpu process starts.
struct Prepared {
  UniqueFd kvm, kernel, initrd;
  std::string cmdline;
  // One per disk, in order: the vcpu's end of the vhost-user connection. For --disk the
  // other end goes to a moss-blk worker; for --vhost-user-blk it is the backend's socket.
  std::vector<UniqueFd> disk_sockets;
  std::vector<UniqueFd> worker_sockets;  // By disk; invalid for --vhost-user-blk.
  std::vector<UniqueFd> worker_disks;    // By disk: the image the worker serves (--disk-fd).
};

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("the socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  MOSS_TRY(int fd, MOSS_SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd sock(fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return make_error("cannot connect to the vhost-user backend at " + path + ": " + strerror(errno), errno);
  }
  return sock;
}

// A vhost-user backend is sent the guest's memory (the memfd, mapped read-write) and its
// rings: whoever listens at the path must be this user or root, or the uid the user named
// (",peer-uid=N"). Checked right after connect, before a byte is sent; a socket another user
// put at a well-known path (/tmp/qsd.sock) is refused.
Result<void> check_backend_peer(int sock, const cli::Disk& d) {
  ucred cred{};
  socklen_t len = sizeof cred;
  MOSS_CHECK(MOSS_SYS(getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len)));
  const uid_t me = geteuid();
  if (cred.uid == me || cred.uid == 0 || (d.peer_uid && cred.uid == *d.peer_uid)) return {};
  const std::string uid = std::to_string(cred.uid);
  return make_error("the vhost-user backend at " + d.path + " runs as uid " + uid + ", neither you (uid " +
                    std::to_string(me) + ") nor root, and would be given the guest's memory; if you trust that user, "
                    "give --vhost-user-blk " + d.path + ",peer-uid=" + uid);
}

Result<void> prepare_disks(const cli::RunOptions& o, Prepared& p) {
  std::vector<std::pair<std::string, std::pair<dev_t, ino_t>>> seen;  // Path, identity of each disk so far.
  for (const auto& d : o.disks) {
    if (d.vhost_user) {
      MOSS_TRY(UniqueFd sock, connect_unix(d.path));
      MOSS_CHECK(check_backend_peer(sock.get(), d));
      p.disk_sockets.push_back(std::move(sock));
      p.worker_sockets.emplace_back();
      p.worker_disks.emplace_back();
      continue;
    }
    // Opened here and passed in: the jailed worker has no path to open.
    int fd = open(d.path.c_str(), (d.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
      return make_error("cannot open the disk " + d.path + (d.readonly ? " for reading: " : " for reading and writing: ") +
                        strerror(errno), errno);
    }
    UniqueFd disk(fd);
    struct stat st;
    MOSS_CHECK(MOSS_SYS(fstat(fd, &st)));
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
      return make_error("the disk " + d.path + " is neither a regular file nor a block device");
    }
    // The same file (or block device) under two names would be two writers of one disk.
    auto identity = S_ISBLK(st.st_mode) ? std::make_pair(dev_t{0}, static_cast<ino_t>(st.st_rdev))
                                        : std::make_pair(st.st_dev, st.st_ino);
    for (size_t i = 0; i < seen.size(); i++) {
      if (seen[i].second == identity) {
        return make_error("the disk " + d.path + " is the same " + (S_ISBLK(st.st_mode) ? "device" : "file") +
                          " as the disk " + seen[i].first + " given before it; give each disk once");
      }
    }
    seen.emplace_back(d.path, identity);
    // One disk, one writer (base/disk_lock.h): another moss or QEMU using it is refused. The
    // lock is on this open file, so it stays with the worker this fd is passed to.
    MOSS_CHECK(lock_disk(fd, d.readonly, "the disk " + d.path));
    int sv[2];
    MOSS_CHECK(MOSS_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
    p.disk_sockets.emplace_back(sv[0]);
    p.worker_sockets.emplace_back(sv[1]);
    p.worker_disks.push_back(std::move(disk));
  }
  return {};
}

Result<Prepared> prepare(const cli::RunOptions& o) {
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
    if (initrd_size) MOSS_CHECK(pread_exact(p.initrd.get(), 0, probe, "the initrd " + initrd_path));
  }

  p.cmdline = kBaseCmdline;
  if (!o.append.empty()) p.cmdline += " " + o.append;
  // moss-init connects to the host when its agent is up; the command then goes over that.
  if (o.has_command) p.cmdline += " " + guest::encode_dial(agent::kAgentPort);
  MOSS_CHECK(boot::plan_boot(*kernel, o.mem_bytes, initrd_size, p.cmdline.size()));

  auto meminfo = read_text_file("/proc/meminfo");
  uint64_t host_mem = meminfo ? host::mem_total_from_meminfo(*meminfo) : 0;
  if (host_mem && o.mem_bytes > host_mem) {
    return make_error("--mem " + std::to_string(o.mem_bytes >> 20) + " MiB is more than this host's " +
                      std::to_string(host_mem >> 20) + " MiB of memory");
  }

  MOSS_CHECK(prepare_disks(o, p));
  MOSS_TRY(p.kvm, host::open_kvm(host::kvm_path()));
  MOSS_CHECK(kvm_check_api(p.kvm.get()));
  int max_vcpus = kvm_check_extension(p.kvm.get(), KVM_CAP_MAX_VCPUS);
  if (max_vcpus <= 0) max_vcpus = kvm_check_extension(p.kvm.get(), KVM_CAP_NR_VCPUS);
  if (max_vcpus <= 0) max_vcpus = 4;  // KVM's documented minimum when neither cap answers.
  if (max_vcpus > 254) max_vcpus = 254;  // xAPIC ids, with one left for the IOAPIC.
  if (o.cpus > static_cast<uint32_t>(max_vcpus)) {
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

}  // namespace

int run_vm(const cli::RunOptions& options) {
  ensure_stdio();
  // A reader of our stdout that goes away is an EPIPE for the guest program, not our death.
  signal(SIGPIPE, SIG_IGN);
  if (options.tty && !isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "moss: -t needs a terminal on stdin\n");
    return kExitUsage;
  }
  if (auto r = check_stats_file(options.stats_file); !r) {
    std::fprintf(stderr, "moss: %s\n", r.error().message.c_str());
    return kExitFailure;
  }
  auto console = ConsoleSink::open(!options.has_command, options.console_file);
  if (!console) {
    std::fprintf(stderr, "moss: %s\n", console.error().message.c_str());
    return kExitFailure;
  }
  // Until the VM runs, a failure leaves behind no --console file that this run created.
  struct ConsoleCleanup {
    ConsoleSink* sink;
    bool armed = true;
    ~ConsoleCleanup() {
      if (armed) sink->remove_if_unused();
    }
  } console_cleanup{&*console};
  // Every VM has a vsock device (with a command, the way its agent is reached).
  auto vsock = vmvsock::Plan::prepare(control::runtime_dir(), options.vsock_socket,
                                      options.has_command ? agent::kAgentPort : 0);
  if (!vsock) {
    std::fprintf(stderr, "moss: %s\n", vsock.error().message.c_str());
    return kExitFailure;
  }
  auto prepared = prepare(options);
  if (!prepared) {
    std::fprintf(stderr, "moss: %s\n", prepared.error().message.c_str());
    return kExitFailure;
  }
  Prepared& p = *prepared;
  if (options.no_sandbox) std::fputs(jail::no_sandbox_warning().c_str(), stderr);
  std::optional<control::Endpoint> endpoint;
  if (!options.name.empty()) {
    auto e = control::Endpoint::claim(control::runtime_dir(), options.name);
    if (!e) {
      std::fprintf(stderr, "moss: %s\n", e.error().message.c_str());
      return kExitFailure;
    }
    if (e->removed_stale()) LOG_INFO("removed the control socket a crashed run named %s left behind", options.name.c_str());
    endpoint = std::move(*e);
  }
  int vs[2];  // The vsock device's vhost-user connection: the vcpu process's end, the worker's.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vs) != 0) {
    std::fprintf(stderr, "moss: cannot create the vsock device's connection: %s\n", strerror(errno));
    return kExitFailure;
  }
  UniqueFd vsock_vcpu_end(vs[0]), vsock_worker_end(vs[1]);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    std::fprintf(stderr, "moss: cannot create the control channel: %s\n", strerror(errno));
    return kExitFailure;
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  // Block the signals the session handles so none is lost between fork and the event loop.
  sigset_t block;
  sigemptyset(&block);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&block, s);
  sigprocmask(SIG_BLOCK, &block, nullptr);

  // Device workers first: each gets its end of the vhost-user connection as fd 3.
  std::vector<StartedWorker> workers;
  auto stop_started = [&] {
    for (auto& w : workers) {
      kill(w.pid, SIGKILL);
      waitpid(w.pid, nullptr, 0);
    }
  };
  for (size_t i = 0; i < options.disks.size(); i++) {
    const auto& d = options.disks[i];
    if (d.vhost_user) continue;
    ChildSpec w;
    w.path = self_dir() + "/moss-blk";
    int cv[2];  // The worker's control channel: it answers describe/stats/quiesce/... on it.
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cv) != 0) {
      stop_started();
      std::fprintf(stderr, "moss: cannot create a worker's control channel: %s\n", strerror(errno));
      return kExitFailure;
    }
    UniqueFd control_ours(cv[0]), control_theirs(cv[1]);
    w.argv = {"moss-blk", "--fd", "3", "--disk-fd", "4", "--control-fd", "5", "--disk", d.path};
    if (d.readonly) w.argv.push_back("--readonly");
    w.argv.push_back("--num-queues");
    w.argv.push_back(std::to_string(options.cpus));
    w.fds = {p.worker_sockets[i].get(), p.worker_disks[i].get(), control_theirs.get()};
    w.sandbox = jail::blk(options.cpus, jail::disk_bytes(p.worker_disks[i].get()), !options.no_sandbox);
    auto wpid = spawn_child(w);
    if (!wpid) {
      stop_started();
      std::fprintf(stderr, "moss: cannot start the blk worker for %s: %s\n", d.path.c_str(), wpid.error().message.c_str());
      return kExitFailure;
    }
    workers.push_back({*wpid, "blk", "blk worker for " + d.path, std::move(control_ours)});
    p.worker_sockets[i].reset();
    p.worker_disks[i].reset();
  }
  {
    ChildSpec w = (*vsock)->worker_spec(self_dir() + "/moss-vsock", vsock_worker_end.get(), !options.no_sandbox);
    auto wpid = spawn_child(w);
    if (!wpid) {
      stop_started();
      std::fprintf(stderr, "moss: cannot start the vsock worker: %s\n", wpid.error().message.c_str());
      return kExitFailure;
    }
    (*vsock)->worker_started();
    workers.push_back({*wpid, "vsock", "vsock worker", UniqueFd()});
    vsock_worker_end.reset();
  }

  ChildSpec spec;
  spec.path = self_dir() + "/moss-vcpu";
  spec.argv = {"moss-vcpu", "--control-fd", "3"};
  spec.fds = {theirs.get(), p.kvm.get(), p.kernel.get()};
  // The vsock device counts as one more vhost-user connection (3 queues: fewer fds than a disk
  // with a queue per vCPU, more than one with a single queue; the limit has room for that).
  spec.sandbox = jail::vcpu(options.cpus, p.disk_sockets.size() + 1, options.mem_bytes, !options.no_sandbox);
  if (p.initrd) spec.fds.push_back(p.initrd.get());
  std::vector<int32_t> disk_fds;
  for (const auto& s : p.disk_sockets) {
    disk_fds.push_back(static_cast<int32_t>(3 + spec.fds.size()));
    spec.fds.push_back(s.get());
  }
  int32_t vsock_fd = static_cast<int32_t>(3 + spec.fds.size());
  spec.fds.push_back(vsock_vcpu_end.get());
  uint64_t spawn_ns = monotonic_ns();
  auto pid = spawn_child(spec);
  if (!pid) {
    stop_started();
    std::fprintf(stderr, "moss: cannot start the vcpu process: %s\n", pid.error().message.c_str());
    return kExitFailure;
  }
  theirs.reset();
  p.disk_sockets.clear();
  vsock_vcpu_end.reset();
  p.kvm.reset();  // The broker itself never touches the VM.

  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  auto start = msg.initStart();
  start.setMemBytes(options.mem_bytes);
  start.setCpus(options.cpus);
  start.setCmdline(p.cmdline);
  start.setKvmFd(4);
  start.setKernelFd(5);
  start.setInitrdFd(p.initrd ? 6 : -1);
  auto fds = start.initVhostUserBlkFds(static_cast<unsigned>(disk_fds.size()));
  for (unsigned i = 0; i < disk_fds.size(); i++) fds.set(i, disk_fds[i]);
  start.setVhostUserVsockFd(vsock_fd);
  if (auto r = ipc::send_message(ours.get(), mb); !r) {
    LOG_WARN("cannot send the start message: %s", r.error().message.c_str());
  }
  console_cleanup.armed = false;  // The VM runs: the console file is its.
  Session session(options, StartedVcpu{*pid, std::move(ours), spawn_ns}, std::move(workers), std::move(endpoint),
                  std::move(*console), std::move(*vsock));
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

int exec_device(const std::string& kind, const std::vector<std::string>& args) {
  return standalone::run(kind, self_dir() + "/moss-" + kind, args);
}

}  // namespace moss
