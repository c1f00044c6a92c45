#include "broker/run.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <kj/exception.h>

#include "base/disk_lock.h"
#include "base/file.h"
#include "base/log.h"
#include "base/syscall.h"
#include "base/unix_socket.h"
#include "broker/console_sink.h"
#include "broker/control.h"
#include "broker/defaults.h"
#include "broker/host.h"
#include "broker/jail.h"
#include "broker/launcher.h"
#include "broker/standalone.h"
#include "broker/vm_vsock.h"
#include "broker/worker_control.h"
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

constexpr int kStopGraceSeconds = 5;
constexpr int kExitGraceSeconds = 5;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

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

constexpr char kVsockWorker[] = "the vsock worker";

// A device worker the broker started for this VM.
struct Worker {
  pid_t pid = -1;
  std::string what;  // "the blk worker for disk.img"
  bool reaped = false;
  UniqueFd control;  // ipc/worker.capnp (broker/worker_control.h); invalid for none.
};

// Supervises one vcpu process, and the device workers, from a libevent loop.
class Session {
 public:
  Session(const cli::RunOptions& o, pid_t pid, UniqueFd ctl, uint64_t spawn_ns, std::vector<Worker> workers,
          std::optional<control::Endpoint> endpoint, ConsoleSink console, std::unique_ptr<vmvsock::Plan> vsock)
      : options_(o), pid_(pid), ctl_(std::move(ctl)), spawn_ns_(spawn_ns), workers_(std::move(workers)),
        endpoint_(std::move(endpoint)), console_(std::move(console)), vsock_(std::move(vsock)) {}

  int run();

 private:
  static void on_control(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->read_control(); }
  static void on_signal(evutil_socket_t sig, short, void* self) { static_cast<Session*>(self)->handle_signal(sig); }
  static void on_stdin(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->read_stdin(); }
  static void on_grace(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->kill_child("did not stop in time"); }
  static void on_exit_grace(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->child_lingers(); }
  static void on_worker_grace(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->worker_left(); }
  static void on_control_client(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->accept_client(); }
  static void on_agent_dial(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->accept_agent(); }
  static void on_agent_fd(evutil_socket_t fd, short what, void* self) {
    static_cast<Session*>(self)->agent_ready(fd, what);
  }
  static void on_shutdown_grace(evutil_socket_t, short, void* self) {
    static_cast<Session*>(self)->guest_ignores_shutdown();
  }
  static void on_boot_timeout(evutil_socket_t, short, void* self) { static_cast<Session*>(self)->boot_timed_out(); }
  void accept_client();
  // The command (moss run -- CMD): moss-init dials in when its agent is up, and the command
  // runs over that connection (agent::ExecClient, driven by this loop). The vsock worker's
  // connect requests come in here too (vmvsock::Plan::serve_connect_requests).
  void accept_agent();
  void agent_ready(int fd, short what);
  void sync_agent();
  void guest_ignores_shutdown();
  void boot_timed_out();
  void set_raw_terminal();
  void restore_terminal();
  bool command_running() const { return client_ && !client_->finished(); }
  // The VM is over or on its way out: nothing more to start or stop.
  bool vm_ending() const {
    return have_exit_ || child_reaped_ || stop_requested_ || stop_signal_ || !worker_failure_.empty();
  }
  control::VmStats stats() const;

  void read_control();
  bool handle_packet(ipc::Packet& packet);
  void handle_signal(int sig);
  void read_stdin();
  void kill_child(const char* why);
  void child_lingers();
  void send_stop();
  int finish();
  int finish_vm();  // finish() without a command's outcome: how the VM ended.
  void write_stats(const rusage& child);
  void reap_workers();
  void worker_left();
  void stop_workers();

  const cli::RunOptions& options_;
  pid_t pid_;
  UniqueFd ctl_;
  uint64_t spawn_ns_;
  std::vector<Worker> workers_;
  std::string worker_failure_;  // A worker that died while the VM ran.
  bool worker_exit_clean_ = false;   // ... with status 0 (its connection closed).
  bool worker_stopped_vm_ = false;   // ... and the vcpu process did not follow within 1 s.
  event* worker_grace_ev_ = nullptr;
  std::optional<control::Endpoint> endpoint_;  // --name: the control socket.
  ConsoleSink console_;
  std::unique_ptr<vmvsock::Plan> vsock_;
  event* agent_dial_ev_ = nullptr;
  std::unique_ptr<agent::ExecClient> client_;
  std::vector<event*> agent_evs_;  // One per ExecClient::watches() entry, remade after each event.
  event* shutdown_grace_ev_ = nullptr;
  event* boot_timeout_ev_ = nullptr;
  std::string boot_failure_;  // The agent did not connect within --boot-timeout.
  event* winch_ev_ = nullptr;
  bool shutdown_sent_ = false;
  int forwarded_signals_ = 0;
  termios saved_termios_{};
  bool raw_terminal_ = false;
  uint64_t agent_connected_ns_ = 0, command_exited_ns_ = 0;
  event* client_ev_ = nullptr;
  bool stop_requested_ = false;  // moss stop NAME.
  bool paused_ = false;          // moss pause NAME (answered by the vcpu process).
  // moss pause/resume clients waiting for the vcpu process's answer, in request order (the
  // vcpu process answers in order).
  struct Waiting {
    UniqueFd conn;
    control::Verb verb;
  };
  std::vector<Waiting> waiting_;
  void forward_pause(UniqueFd conn, control::Verb verb);
  void answer_waiting(const Result<void>& outcome);
  uint64_t first_run_ns_ = 0, first_exit_ns_ = 0;
  event_base* base_ = nullptr;
  event* ctl_ev_ = nullptr;
  event* stdin_ev_ = nullptr;
  event* grace_ev_ = nullptr;
  event* exit_grace_ev_ = nullptr;
  int lingering_ = 0;  // How many times the exit grace period ran out.
  int stop_signal_ = 0;
  bool have_exit_ = false;
  bool child_reaped_ = false;
  int wait_status_ = 0;
  rusage child_usage_{};
  ipc::ExitInfo::Reason exit_reason_ = ipc::ExitInfo::Reason::ERROR;
  int32_t exit_status_ = 0;
  std::string exit_message_;
  std::string protocol_error_;
};

void Session::read_control() {
  for (;;) {
    auto packet = ipc::receive_message(ctl_.get());
    if (!packet) {
      if (packet.error().err == EAGAIN) return;
      protocol_error_ = packet.error().message;
    } else if (*packet && handle_packet(**packet)) {
      continue;
    }
    // EOF or a bad message: stop listening; the child's exit (SIGCHLD) finishes the session.
    if (ctl_ev_) event_del(ctl_ev_);
    if (!protocol_error_.empty()) kill_child("sent a malformed control message");
    return;
  }
}

bool Session::handle_packet(ipc::Packet& packet) {
  bool ok = true;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto msg = packet.root<ipc::VcpuToBroker>();
    if (msg.getVersion() != ipc::PROTOCOL_VERSION) {
      protocol_error_ = "the vcpu process speaks control protocol version " + std::to_string(msg.getVersion());
      ok = false;
      return;
    }
    switch (msg.which()) {
      case ipc::VcpuToBroker::CONSOLE: {
        auto data = msg.getConsole();
        console_.write(data.begin(), data.size());
        break;
      }
      case ipc::VcpuToBroker::STARTED:
        first_run_ns_ = msg.getStarted().getFirstRunNs();
        break;
      case ipc::VcpuToBroker::PAUSED:
        paused_ = true;
        answer_waiting({});
        break;
      case ipc::VcpuToBroker::RESUMED:
        paused_ = false;
        answer_waiting({});
        break;
      case ipc::VcpuToBroker::REFUSED:
        answer_waiting(make_error(msg.getRefused().cStr()));
        break;
      case ipc::VcpuToBroker::CPU_STATE:
      case ipc::VcpuToBroker::RESTORED:
        protocol_error_ = "the vcpu process sent CPU state nobody asked for";
        ok = false;
        break;
      case ipc::VcpuToBroker::EXITED: {
        auto x = msg.getExited();
        if (!have_exit_) {
          // The VM has ended; the process should be gone in a moment. If it is not (a
          // kernel that never finishes tearing the VM down), do not hang the user on it.
          timeval grace{kExitGraceSeconds, 0};
          evtimer_add(exit_grace_ev_, &grace);
        }
        have_exit_ = true;
        exit_reason_ = x.getReason();
        exit_status_ = x.getStatus();
        exit_message_ = x.getMessage().cStr();
        first_exit_ns_ = x.getFirstExitNs();
        LOG_INFO("the vcpu process reports the end of the VM: %s (status %d)", exit_message_.c_str(), exit_status_);
        break;
      }
    }
  })) {
    protocol_error_ = std::string("a control message from the vcpu process is malformed: ") + e->getDescription().cStr();
    ok = false;
  }
  return ok;
}

void Session::send_stop() {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  msg.setStop();
  if (!ipc::send_message(ctl_.get(), mb)) kill_child("could not be asked to stop");
  timeval grace{kStopGraceSeconds, 0};
  evtimer_add(grace_ev_, &grace);
}

void Session::kill_child(const char* why) {
  if (child_reaped_) return;
  LOG_WARN("the vcpu process (pid %d) %s; killing it", pid_, why);
  kill(pid_, SIGKILL);
}

void Session::child_lingers() {
  if (child_reaped_) return;
  if (lingering_++ == 0) {
    kill_child("did not exit after the VM ended");
    timeval grace{kExitGraceSeconds, 0};
    evtimer_add(exit_grace_ev_, &grace);
    return;
  }
  // SIGKILL did not reap it either: it is stuck in the kernel. The guest's result is known.
  LOG_WARN("the vcpu process (pid %d) is stuck in the kernel after the VM ended; leaving it", pid_);
  event_base_loopbreak(base_);
}

control::VmStats Session::stats() const {
  control::VmStats s;
  s.name = options_.name;
  s.state = stop_signal_ || stop_requested_ || have_exit_ ? "stopping" : paused_ ? "paused" : "running";
  s.uptime_ms = (now_ns() - spawn_ns_) / 1000000;
  s.cpus = options_.cpus;
  s.mem_bytes = options_.mem_bytes;
  if (vsock_) {
    s.vsock_cid = vsock_->cid();
    s.vsock_socket = vsock_->socket_path();
  }
  s.processes.push_back(control::process_stats("broker", getpid()));
  s.processes.push_back(control::process_stats("vcpu", pid_));
  for (const auto& w : workers_) {
    if (!w.reaped) s.processes.push_back(control::process_stats(w.what.substr(4), w.pid));  // Drop "the ".
  }
  for (const auto& d : options_.disks) s.disks.push_back(d.path + (d.readonly ? ",ro" : ""));
  for (const auto& w : workers_) {
    if (w.reaped || !w.control) continue;
    // A short time-out: a wedged worker must not stall the broker's loop (its stats are
    // then just missing).
    auto r = worker::call(w.control.get(), worker::Request::kStats, 500);
    if (!r) continue;
    const auto& st = r->stats;
    s.disk_stats.push_back({w.what.substr(4), st.counter("readRequests"), st.counter("writeRequests"),
                            st.counter("flushRequests"), st.counter("otherRequests"), st.bytes_out, st.bytes_in,
                            st.errors, st.in_flight});
  }
  return s;
}

void Session::accept_client() {
  for (;;) {
    int conn = accept4(endpoint_->listen_fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) return;  // EAGAIN: all served.
    control::serve_connection(UniqueFd(conn), {[this] { return stats(); },
                                               [this] {
                                                 if (stop_requested_ || stop_signal_) return;
                                                 stop_requested_ = true;
                                                 send_stop();
                                               },
                                               [this](UniqueFd c, control::Verb v) { forward_pause(std::move(c), v); }});
  }
}

void Session::forward_pause(UniqueFd conn, control::Verb verb) {
  if (have_exit_ || stop_signal_ || stop_requested_) {
    control::answer_deferred(conn.get(), verb, make_error("the VM is stopping"));
    return;
  }
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  if (verb == control::Verb::kPause) msg.setPause();
  else msg.setResume();
  if (auto r = ipc::send_message(ctl_.get(), mb); !r) {
    control::answer_deferred(conn.get(), verb, r.error());
    return;
  }
  waiting_.push_back({std::move(conn), verb});
}

void Session::answer_waiting(const Result<void>& outcome) {
  if (waiting_.empty()) return;
  control::answer_deferred(waiting_.front().conn.get(), waiting_.front().verb, outcome);
  waiting_.erase(waiting_.begin());
}

void Session::accept_agent() {
  // The vsock worker asks for its guest connections to host ports; the first to the agent's
  // port is moss-init's, and comes to us on a socketpair only the worker holds the other end
  // of (no socket on disk that another process could reach first).
  auto agent = vsock_->serve_connect_requests();
  if (vsock_->connect_channel() < 0 && agent_dial_ev_) {  // The worker is gone.
    event_free(agent_dial_ev_);
    agent_dial_ev_ = nullptr;
  }
  if (!agent || client_) return;
  UniqueFd sock = std::move(*agent);
  agent_connected_ns_ = now_ns();
  agent::ExecRequest req;
  req.argv = options_.command;
  req.env = options_.env;
  req.cwd = options_.workdir;
  if (options_.tty) {
    req.mode = agent::Mode::kPty;
    winsize ws{};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
      req.rows = ws.ws_row;
      req.cols = ws.ws_col;
    }
    if (const char* term = getenv("TERM")) req.env.insert(req.env.begin(), std::string("TERM=") + term);
    set_raw_terminal();
  }
  client_ = std::make_unique<agent::ExecClient>(std::move(sock), req,
                                                agent::ExecClient::UserFds{STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO});
  sync_agent();
}

void Session::agent_ready(int fd, short what) {
  short revents = 0;
  if (what & EV_READ) revents |= POLLIN;
  if (what & EV_WRITE) revents |= POLLOUT;
  client_->on_ready(fd, revents);
  sync_agent();
}

// Watches what the client asks for now. The loop uses poll(2) (see run()), where adding and
// removing events is bookkeeping, not system calls, and regular files count as always ready.
void Session::sync_agent() {
  for (event* e : agent_evs_) event_free(e);
  agent_evs_.clear();
  if (client_->finished() && !shutdown_sent_ && command_exited_ns_ == 0) {
    command_exited_ns_ = now_ns();
    restore_terminal();
    // The command is done and its output written: power the guest off (moss-init syncs its
    // file systems first), and stop the VM if it does not go in time. Unless the VM is ending
    // anyway (a stop, a dead worker: then the session broke because of it).
    if (have_exit_ || stop_signal_ || stop_requested_ || !worker_failure_.empty()) return;
    const auto& outcome = client_->outcome();
    client_->request_shutdown(outcome ? outcome->shell_status() & 0xff : kExitFailure);
    shutdown_sent_ = true;
    timeval grace{kStopGraceSeconds, 0};
    evtimer_add(shutdown_grace_ev_, &grace);
  }
  if (client_->finished() && !shutdown_sent_) return;
  if (shutdown_sent_ && client_->flushed()) return;  // Nothing more to say; the VM goes down.
  for (const auto& w : client_->watches()) {
    short events = EV_PERSIST;
    if (w.events & POLLIN) events |= EV_READ;
    if (w.events & POLLOUT) events |= EV_WRITE;
    event* e = event_new(base_, w.fd, events, on_agent_fd, this);
    event_add(e, nullptr);
    agent_evs_.push_back(e);
  }
}

void Session::boot_timed_out() {
  if (client_ || vm_ending()) return;
  boot_failure_ = "the guest's agent did not connect within " + std::to_string(options_.boot_timeout_s) +
                  " s of the start (--boot-timeout), so the command never ran";
  send_stop();
}

void Session::guest_ignores_shutdown() {
  if (vm_ending()) return;
  LOG_WARN("the guest did not power off after the command ended; stopping the VM");
  send_stop();
}

void Session::set_raw_terminal() {
  if (raw_terminal_ || tcgetattr(STDIN_FILENO, &saved_termios_) != 0) return;
  termios raw = saved_termios_;
  cfmakeraw(&raw);
  if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) raw_terminal_ = true;
}

void Session::restore_terminal() {
  if (!raw_terminal_) return;
  tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios_);
  raw_terminal_ = false;
}

void Session::reap_workers() {
  for (auto& w : workers_) {
    if (w.reaped) continue;
    int status;
    if (waitpid(w.pid, &status, WNOHANG) != w.pid) continue;
    w.reaped = true;
    // After the loop (stop_workers) the VM is over: nothing is left to judge or stop.
    if (base_ == nullptr || have_exit_ || child_reaped_ || !worker_failure_.empty()) continue;
    // An exit report the vcpu process sent before closing its connections explains it.
    read_control();
    if (have_exit_) continue;
    worker_failure_ = w.what + " (pid " + std::to_string(w.pid) + ") " + describe_wait_status(status) +
                      " while the VM was running";
    worker_exit_clean_ = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (worker_exit_clean_) {
      // A worker ends cleanly when its vhost-user connection closes: the vcpu process is most
      // likely on its way out (its SIGCHLD comes after its sockets close). Judge in a moment.
      timeval grace{1, 0};
      evtimer_add(worker_grace_ev_, &grace);
      continue;
    }
    // The guest's device is gone: its I/O would hang forever. End the VM now, in order (its
    // vCPUs leave KVM_RUN, the vcpu process exits and the other workers see their connections
    // close), with the usual SIGKILL after the grace period.
    if (!stop_signal_ && !stop_requested_) send_stop();
  }
}

void Session::worker_left() {
  if (have_exit_ || child_reaped_ || stop_signal_ || stop_requested_) return;
  worker_stopped_vm_ = true;  // The vcpu process lives on without the device: a real failure.
  send_stop();
}

void Session::stop_workers() {
  // The vcpu process is gone, so each worker's connection closed and it is exiting; give it
  // a moment, then make sure.
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 100; i++) {
      reap_workers();
      bool all = true;
      for (const auto& w : workers_) all = all && w.reaped;
      if (all) return;
      usleep(10000);
    }
    for (const auto& w : workers_) {
      if (!w.reaped) kill(w.pid, round == 0 ? SIGTERM : SIGKILL);
    }
  }
  for (const auto& w : workers_) {
    if (!w.reaped) LOG_WARN("%s (pid %d) did not exit", w.what.c_str(), w.pid);
  }
}

void Session::handle_signal(int sig) {
  if (sig == SIGCHLD) {
    reap_workers();
    int status;
    rusage ru{};
    pid_t r = wait4(pid_, &status, WNOHANG, &ru);
    if (r != pid_) return;
    child_reaped_ = true;
    wait_status_ = status;
    child_usage_ = ru;
    read_control();  // Whatever the child sent before it exited (its exit report).
    event_base_loopbreak(base_);
    return;
  }
  if (sig == SIGWINCH) {
    winsize ws{};
    if (client_ && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) client_->resize(ws.ws_row, ws.ws_col);
    return;
  }
  // While the command runs, signals are its (as if it ran here); the third stops the VM, for a
  // program that ignores them.
  if (command_running() && stop_signal_ == 0 && ++forwarded_signals_ < 3) {
    client_->forward_signal(sig);
    sync_agent();
    return;
  }
  if (stop_signal_ == 0) {
    stop_signal_ = sig;
    send_stop();
  } else {
    kill_child("was asked twice to stop");
  }
}

void Session::read_stdin() {
  char buf[4096];
  ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && errno == EINTR) return;
    event_del(stdin_ev_);  // EOF: the UART has no way to say it; the guest just sees no more input.
    return;
  }
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  msg.setConsoleInput(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(buf), static_cast<size_t>(n)));
  (void)ipc::send_message(ctl_.get(), mb);
}

int Session::run() {
  // poll(2), not epoll: the command's stdin or stdout may be a regular file or /dev/null,
  // which epoll refuses and poll reports always ready; the loop has a handful of fds.
  event_config* cfg = event_config_new();
  MOSS_ASSERT(cfg != nullptr);
  event_config_avoid_method(cfg, "epoll");
  base_ = event_base_new_with_config(cfg);
  event_config_free(cfg);
  MOSS_ASSERT(base_ != nullptr);
  int flags = fcntl(ctl_.get(), F_GETFL);
  fcntl(ctl_.get(), F_SETFL, flags | O_NONBLOCK);
  ctl_ev_ = event_new(base_, ctl_.get(), EV_READ | EV_PERSIST, on_control, this);
  event_add(ctl_ev_, nullptr);
  grace_ev_ = evtimer_new(base_, on_grace, this);
  exit_grace_ev_ = evtimer_new(base_, on_exit_grace, this);
  event* sigs[] = {evsignal_new(base_, SIGCHLD, on_signal, this), evsignal_new(base_, SIGINT, on_signal, this),
                   evsignal_new(base_, SIGTERM, on_signal, this), evsignal_new(base_, SIGHUP, on_signal, this)};
  for (event* e : sigs) evsignal_add(e, nullptr);
  // run_vm() blocked these before the fork so that none is lost; libevent owns them now.
  sigset_t handled;
  sigemptyset(&handled);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&handled, s);
  sigprocmask(SIG_UNBLOCK, &handled, nullptr);
  // Without a command the console is the VM's terminal; typed input goes to it. With one,
  // stdin is the command's (through the agent).
  if (!options_.has_command && isatty(STDIN_FILENO)) {
    stdin_ev_ = event_new(base_, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, this);
    event_add(stdin_ev_, nullptr);
  }
  if (endpoint_) {
    client_ev_ = event_new(base_, endpoint_->listen_fd(), EV_READ | EV_PERSIST, on_control_client, this);
    event_add(client_ev_, nullptr);
  }
  shutdown_grace_ev_ = evtimer_new(base_, on_shutdown_grace, this);
  boot_timeout_ev_ = evtimer_new(base_, on_boot_timeout, this);
  if (options_.has_command && options_.boot_timeout_s > 0) {
    timeval limit{static_cast<time_t>(options_.boot_timeout_s), 0};
    evtimer_add(boot_timeout_ev_, &limit);
  }
  worker_grace_ev_ = evtimer_new(base_, on_worker_grace, this);
  if (vsock_) {
    agent_dial_ev_ = event_new(base_, vsock_->connect_channel(), EV_READ | EV_PERSIST, on_agent_dial, this);
    event_add(agent_dial_ev_, nullptr);
  }
  if (options_.tty) {
    winch_ev_ = evsignal_new(base_, SIGWINCH, on_signal, this);
    evsignal_add(winch_ev_, nullptr);
  }
  // The child may have exited before the SIGCHLD handler was installed.
  handle_signal(SIGCHLD);
  if (!child_reaped_) event_base_dispatch(base_);
  for (event* e : sigs) event_free(e);
  if (stdin_ev_) event_free(stdin_ev_);
  if (client_ev_) event_free(client_ev_);
  if (agent_dial_ev_) event_free(agent_dial_ev_);
  if (winch_ev_) event_free(winch_ev_);
  for (event* e : agent_evs_) event_free(e);
  agent_evs_.clear();
  event_free(shutdown_grace_ev_);
  event_free(boot_timeout_ev_);
  event_free(worker_grace_ev_);
  restore_terminal();
  event_free(grace_ev_);
  event_free(exit_grace_ev_);
  event_free(ctl_ev_);
  ctl_ev_ = nullptr;
  event_base_free(base_);
  base_ = nullptr;
  stop_workers();
  endpoint_.reset();  // The name is free again only once every process of the VM is gone.
  int status = finish();
  vsock_.reset();  // Its sockets and the CID, now that the worker is gone.
  return status;
}

int Session::finish() {
  if (!options_.stats_file.empty()) write_stats(child_usage_);
  if (client_ && client_->finished() && client_->outcome()) {
    // The command's outcome is known and its output written: that is moss run's result,
    // however the VM went down after it.
    const auto& outcome = *client_->outcome();
    if (!outcome.message.empty()) std::fprintf(stderr, "moss: %s\n", outcome.message.c_str());
    return outcome.shell_status();
  }
  // The session with the agent broke while the VM ran on, and we powered the guest off: no
  // reason but the session's.
  if (client_ && client_->finished() && shutdown_sent_ && protocol_error_.empty() && worker_failure_.empty() &&
      have_exit_ && exit_reason_ == ipc::ExitInfo::Reason::GUEST_STATUS) {
    std::fprintf(stderr, "moss: lost the command in the guest: %s\n", client_->outcome().error().message.c_str());
    return kExitFailure;
  }
  // The command never finished: whatever ended the VM (a failure, or a signal to a guest that
  // never dialled), its console says how far the guest got.
  int status = finish_vm();
  if (options_.has_command && status != 0) {
    std::string tail = console_.tail();
    if (!console_.file().empty()) {
      std::fprintf(stderr, "moss: the guest console is in %s\n", console_.file().c_str());
    } else if (!tail.empty() && !console_.to_stdout()) {
      std::fprintf(stderr, "moss: the guest console's last lines:\n%s%s", tail.c_str(), tail.back() == '\n' ? "" : "\n");
    }
  }
  return status;
}

int Session::finish_vm() {
  using R = ipc::ExitInfo::Reason;
  if (!protocol_error_.empty()) {
    std::fprintf(stderr, "moss: %s\n", protocol_error_.c_str());
    return kExitFailure;
  }
  if (!boot_failure_.empty() && have_exit_ && exit_reason_ == ipc::ExitInfo::Reason::STOPPED) {
    std::fprintf(stderr, "moss: %s; the VM was stopped\n", boot_failure_.c_str());
    return kExitFailure;
  }
  // A worker that ended cleanly only followed the vcpu process out, unless the VM ran on
  // without it and had to be stopped.
  if (!worker_failure_.empty() && (!worker_exit_clean_ || worker_stopped_vm_)) {
    std::fprintf(stderr, "moss: %s; the VM was stopped\n", worker_failure_.c_str());
    return kExitFailure;
  }
  if (!have_exit_) {
    std::fprintf(stderr, "moss: the vcpu process (pid %d) %s before the VM ended; the VM is gone\n", pid_,
                 describe_wait_status(wait_status_).c_str());
    return kExitFailure;
  }
  switch (exit_reason_) {
    case R::GUEST_STATUS:
      if (options_.has_command) {
        // moss-init's own status: the command's comes over the agent.
        std::fprintf(stderr, "moss: the guest ended with status %d %s\n", exit_status_ & 0xff,
                     client_ ? "before the command finished" : "before its agent connected to run the command");
        return kExitFailure;
      }
      return exit_status_ & 0xff;
    case R::STOPPED:
      if (stop_requested_ && !stop_signal_) {
        std::fprintf(stderr, "moss: the VM was stopped (moss stop %s)\n", options_.name.c_str());
        return 128 + SIGTERM;  // As if it had been sent SIGTERM, which is what moss stop means.
      }
      std::fprintf(stderr, "moss: the VM was stopped (%s)\n", stop_signal_ ? sigabbrev_np(stop_signal_) : "by request");
      return stop_signal_ ? 128 + stop_signal_ : kExitFailure;
    case R::RESET:
    case R::POWER_OFF:
      if (options_.has_command) {
        std::fprintf(stderr, "moss: %s before the command reported its exit status\n", exit_message_.c_str());
        return kExitFailure;
      }
      return 0;
    case R::ERROR:
      std::fprintf(stderr, "moss: the VM failed: %s\n", exit_message_.c_str());
      return kExitFailure;
  }
  return kExitFailure;
}

void Session::write_stats(const rusage& child) {
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  auto cpu_ms = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000.0 + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000.0;
  };
  // Replaced whole (a new file renamed over it), so a reader never sees half of it; through a
  // symlink, the file it points to is replaced. Never a FIFO or device that appeared there
  // since the start (check_stats_file refused one then).
  std::string target = options_.stats_file;
  struct stat st;
  if (lstat(target.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char* real = realpath(target.c_str(), nullptr);
    if (real == nullptr) {
      LOG_WARN("cannot write --stats file %s: %s", options_.stats_file.c_str(), strerror(errno));
      return;
    }
    target = real;
    std::free(real);
  }
  if (lstat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    LOG_WARN("did not write --stats file %s: it is now %s, not a regular file", options_.stats_file.c_str(),
             describe_file_type(st.st_mode).c_str());
    return;
  }
  std::string tmp = target + ".XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  FILE* f = fd < 0 ? nullptr : fdopen(fd, "w");
  if (!f) {
    LOG_WARN("cannot write --stats file %s: %s", options_.stats_file.c_str(), strerror(errno));
    if (fd >= 0) {
      close(fd);
      unlink(tmp.c_str());
    }
    return;
  }
  fchmod(fd, 0644);
  std::fprintf(f,
               "{\"spawn_ns\": %llu, \"first_run_ns\": %llu, \"first_exit_ns\": %llu,\n"
               " \"agent_connected_ns\": %llu, \"command_exited_ns\": %llu,\n"
               " \"broker_maxrss_kib\": %ld, \"broker_cpu_ms\": %.3f,\n"
               " \"vcpu_maxrss_kib\": %ld, \"vcpu_cpu_ms\": %.3f}\n",
               static_cast<unsigned long long>(spawn_ns_), static_cast<unsigned long long>(first_run_ns_),
               static_cast<unsigned long long>(first_exit_ns_), static_cast<unsigned long long>(agent_connected_ns_),
               static_cast<unsigned long long>(command_exited_ns_), self.ru_maxrss, cpu_ms(self), child.ru_maxrss,
               cpu_ms(child));
  bool written = std::fflush(f) == 0 && !std::ferror(f);
  written = std::fclose(f) == 0 && written;
  if (!written || rename(tmp.c_str(), target.c_str()) != 0) {
    LOG_WARN("cannot write --stats file %s: %s", options_.stats_file.c_str(), strerror(errno));
    unlink(tmp.c_str());
  }
}

// --stats FILE is replaced whole when the VM ends: refuse at the start what must not be
// replaced (a FIFO, a device, a directory) or cannot be written (no such directory).
Result<void> check_stats_file(const std::string& path) {
  if (path.empty()) return {};
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return make_error("the --stats file " + path + " is " + describe_file_type(st.st_mode) +
                        ", which moss would replace; give the path of a regular file");
    }
    return {};
  }
  if (errno != ENOENT) return make_error("cannot use the --stats file " + path + ": " + strerror(errno), errno);
  std::string dir = parent_dir(path);
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error("the directory of the --stats file " + path + " does not exist");
  }
  return {};
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
  std::vector<Worker> workers;
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
    int cv[2];  // The worker's control channel: it answers describe, stats and shutdown on it.
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
    workers.push_back({*wpid, "the blk worker for " + d.path, false, std::move(control_ours)});
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
    workers.push_back({*wpid, kVsockWorker, false, UniqueFd()});
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
  uint64_t spawn_ns = now_ns();
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
  Session session(options, *pid, std::move(ours), spawn_ns, std::move(workers), std::move(endpoint),
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
