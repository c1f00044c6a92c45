#include "tests/harness/backend_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/syscall.h"
#include "tests/support/disk_lock_wait.h"

namespace moss::harness {
namespace {

constexpr int kPassedFd = 3;   // Where moss-blk gets its connected socket with pass_fd.
constexpr int kControlFd = 4;  // And its control socket with `control` (the broker's choice too).
// The child's copies are moved above the fds they are dup2'd to, so neither dup2 can
// overwrite the other's source.
constexpr int kFirstSpareFd = 10;

Result<UniqueFd> spare_copy(UniqueFd fd) {
  MOSS_TRY(int raw, MOSS_SYS(::fcntl(fd.get(), F_DUPFD_CLOEXEC, kFirstSpareFd)));
  return UniqueFd(raw);
}

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

}  // namespace

const char* backend_name(BackendKind kind) {
  return kind == BackendKind::kMossBlk ? "moss-blk" : "qemu-storage-daemon";
}

// ---- TempDir ----

Result<TempDir> TempDir::create(const std::string& parent) {
  std::string base = parent;
  if (base.empty()) {
    const char* t = std::getenv("TMPDIR");
    base = t != nullptr && *t != '\0' ? t : "/tmp";
  }
  std::string tmpl = base + "/moss-harness-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return make_error("cannot create a directory under " + base, errno);
  return TempDir(tmpl);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- BackendProcess ----

BackendProcess::BackendProcess(const BackendOptions& options, TempDir dir)
    : options_(options), dir_(std::move(dir)), socket_(dir_.path() + "/vhost.sock"), log_path_(dir_.path() + "/backend.log") {}

BackendProcess::~BackendProcess() {
  if (pid_ > 0 && !status_) stop();
}

std::string BackendProcess::moss_blk_path() {
  if (const char* p = std::getenv("MOSS_BLK"); p != nullptr && *p != '\0') return p;
  if (const char* b = std::getenv("MOSS_BUILD_DIR"); b != nullptr && *b != '\0') return std::string(b) + "/moss-blk";
  // Test binaries live in the build tree; binaries land at its top (CMAKE_RUNTIME_OUTPUT_DIRECTORY).
  return self_dir() + "/moss-blk";
}

std::string BackendProcess::qsd_path() { return "/usr/bin/qemu-storage-daemon"; }

std::optional<std::string> BackendProcess::unavailable(BackendKind kind) {
  std::string path = kind == BackendKind::kMossBlk ? moss_blk_path() : qsd_path();
  if (::access(path.c_str(), X_OK) != 0) return path + " is not there (or not executable)";
  return std::nullopt;
}

Result<std::unique_ptr<BackendProcess>> BackendProcess::start(const BackendOptions& o, std::chrono::milliseconds timeout) {
  if (auto why = unavailable(o.kind)) return make_error(std::string(backend_name(o.kind)) + ": " + *why);
  // Backends taking turns on one image (the bench, reconnect tests) must not see the lock of
  // one that just stopped.
  if (o.null_bytes == 0 && !o.disk.empty()) (void)test::wait_until_disk_unlocked(o.disk, std::chrono::seconds(10));
  MOSS_TRY(TempDir dir, TempDir::create());
  std::unique_ptr<BackendProcess> p(new BackendProcess(o, std::move(dir)));

  std::vector<std::string> args;
  UniqueFd child_end, child_control;
  if (o.kind == BackendKind::kMossBlk) {
    args = {moss_blk_path(), "--disk", o.disk};
    if (o.pass_fd) {
      int sv[2];
      MOSS_CHECK(MOSS_SYS(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
      p->connection_.reset(sv[0]);
      MOSS_TRY(child_end, spare_copy(UniqueFd(sv[1])));
      args.insert(args.end(), {"--fd", std::to_string(kPassedFd)});
    } else {
      args.insert(args.end(), {"--socket-path", p->socket_});
    }
    if (o.control) {
      int cv[2];
      MOSS_CHECK(MOSS_SYS(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cv)));
      p->control_.reset(cv[0]);
      MOSS_TRY(child_control, spare_copy(UniqueFd(cv[1])));
      args.insert(args.end(), {"--control-fd", std::to_string(kControlFd)});
    }
    if (o.readonly) args.push_back("--readonly");
    if (o.num_queues != 1) args.insert(args.end(), {"--num-queues", std::to_string(o.num_queues)});
  } else {
    std::string node;
    if (o.null_bytes > 0) {
      node = "driver=null-co,node-name=f0,size=" + std::to_string(o.null_bytes);
    } else {
      node = "driver=file,node-name=f0,filename=" + o.disk;
      if (o.direct) node += ",cache.direct=on";
      if (o.io_uring) node += ",aio=io_uring";
      if (!o.locking) node += ",locking=off";
    }
    std::string exp = "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + p->socket_ +
                      ",writable=" + (o.readonly ? "off" : "on");
    if (o.num_queues != 1) exp += ",num-queues=" + std::to_string(o.num_queues);
    args = {qsd_path(), "--blockdev", node, "--export", exp};
  }
  args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());

  // Everything the child needs is prepared before fork: it only calls async-signal-safe
  // functions.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  MOSS_TRY(int log_fd, MOSS_SYS(::open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)));
  UniqueFd log(log_fd);
  MOSS_TRY(int null_fd, MOSS_SYS(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  UniqueFd devnull(null_fd);
  pid_t parent = ::getpid();
  MOSS_TRY(pid_t pid, MOSS_SYS(::fork()));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // A crashed test leaves no backend behind.
    if (::getppid() != parent) ::_exit(127);
    ::dup2(devnull.get(), 0);
    ::dup2(log.get(), 1);
    ::dup2(log.get(), 2);
    if (child_end.valid()) ::dup2(child_end.get(), kPassedFd);  // dup2 clears FD_CLOEXEC.
    if (child_control.valid()) ::dup2(child_control.get(), kControlFd);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  p->pid_ = pid;
  child_control.reset();  // The child's copy only: a closed control socket means shutdown.

  if (child_end.valid()) return p;  // Connected already.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    struct stat st;
    if (::stat(p->socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return p;
    if (!p->alive()) {
      return make_error(std::string(backend_name(o.kind)) + " " + p->describe() + " before creating its socket; its log:\n" + p->log());
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(std::string(backend_name(o.kind)) + " created no socket within " +
                        std::to_string(timeout.count()) + " ms; its log:\n" + p->log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool BackendProcess::reap(bool block) {
  if (status_) return true;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    status_ = st;
    return true;
  }
  return false;
}

bool BackendProcess::alive() { return pid_ > 0 && !reap(false); }

int BackendProcess::stop(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (reap(false)) return *status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid_, SIGKILL);
  reap(true);
  return *status_;
}

int BackendProcess::kill9() {
  if (status_) return *status_;
  ::kill(pid_, SIGKILL);
  reap(true);
  return *status_;
}

std::string BackendProcess::log() const {
  std::ifstream f(log_path_);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string BackendProcess::describe() const {
  if (!status_) return "is running";
  int st = *status_;
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    const char* abbrev = sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + " (SIG" + (abbrev ? abbrev : "?") + ")";
  }
  return "ended with wait status " + std::to_string(st);
}

std::optional<double> process_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields 3.. : state is field 3, utime field 14, stime field 15.
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace moss::harness
