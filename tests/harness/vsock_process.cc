#include "tests/harness/vsock_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/syscall.h"

namespace moss::harness {
namespace {

constexpr int kPassedFd = 3;
constexpr int kFirstSpareFd = 10;

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

Result<UniqueFd> unix_connect(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd fd(raw);
  timeval tv = to_timeval(timeout);
  MOSS_CHECK(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  MOSS_CHECK(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return make_error("cannot connect to " + path + ": " + std::strerror(errno), errno);
  }
  return fd;
}

}  // namespace

VsockProcess::VsockProcess(TempDir dir)
    : dir_(std::move(dir)),
      socket_(dir_.path() + "/vhost.sock"),
      uds_(dir_.path() + "/vsock.sock"),
      log_path_(dir_.path() + "/vsock.log") {}

VsockProcess::~VsockProcess() {
  if (pid_ > 0 && !status_) stop();
}

std::string VsockProcess::binary_path() {
  if (const char* p = std::getenv("MOSS_VSOCK"); p != nullptr && *p != '\0') return p;
  if (const char* b = std::getenv("MOSS_BUILD_DIR"); b != nullptr && *b != '\0') return std::string(b) + "/moss-vsock";
  return self_dir() + "/moss-vsock";
}

std::optional<std::string> VsockProcess::unavailable() {
  std::string path = binary_path();
  if (::access(path.c_str(), X_OK) != 0) return path + " is not there (or not executable)";
  return std::nullopt;
}

Result<std::unique_ptr<VsockProcess>> VsockProcess::start(const VsockProcessOptions& o, std::chrono::milliseconds timeout) {
  if (auto why = unavailable()) return make_error("moss-vsock: " + *why);
  MOSS_TRY(TempDir dir, TempDir::create());
  std::unique_ptr<VsockProcess> p(new VsockProcess(std::move(dir)));
  std::vector<std::string> args = {binary_path(), "--guest-cid", std::to_string(o.guest_cid), "--uds-path", p->uds_};
  UniqueFd child_end;
  if (o.pass_fd) {
    int sv[2];
    MOSS_CHECK(MOSS_SYS(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
    p->connection_.reset(sv[0]);
    UniqueFd theirs(sv[1]);
    MOSS_TRY(int spare, MOSS_SYS(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, kFirstSpareFd)));
    child_end.reset(spare);
    args.insert(args.end(), {"--fd", std::to_string(kPassedFd)});
  } else {
    args.insert(args.end(), {"--socket-path", p->socket_});
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
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // A crashed test leaves no worker behind.
    if (::getppid() != parent) ::_exit(127);
    ::dup2(devnull.get(), 0);
    ::dup2(log.get(), 1);
    ::dup2(log.get(), 2);
    if (child_end.valid()) ::dup2(child_end.get(), kPassedFd);  // dup2 clears FD_CLOEXEC.
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  p->pid_ = pid;
  child_end.reset();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    struct stat st;
    bool uds = ::stat(p->uds_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
    bool sock = o.pass_fd || (::stat(p->socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode));
    if (uds && sock) return p;
    if (!p->alive()) return make_error("moss-vsock " + p->describe() + " before creating its sockets; its log:\n" + p->log());
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error("moss-vsock created no sockets within " + std::to_string(timeout.count()) + " ms; its log:\n" + p->log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool VsockProcess::reap(bool block) {
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

bool VsockProcess::alive() { return pid_ > 0 && !reap(false); }

int VsockProcess::stop(std::chrono::milliseconds grace) {
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

std::string VsockProcess::log() const {
  std::ifstream f(log_path_);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string VsockProcess::describe() const {
  if (!status_) return "is running";
  int st = *status_;
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(st));
    return "was killed by signal " + std::to_string(WTERMSIG(st)) + " (SIG" + (abbrev ? abbrev : "?") + ")";
  }
  return "ended with wait status " + std::to_string(st);
}

// ---- Host programs ----

Result<UniqueFd> host_connect(const std::string& uds_path, uint32_t guest_port, std::chrono::milliseconds timeout) {
  MOSS_TRY(UniqueFd fd, unix_connect(uds_path, timeout));
  std::string line = "CONNECT " + std::to_string(guest_port) + "\n";
  MOSS_CHECK(MOSS_SYS(::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL)));
  return fd;
}

Result<std::string> read_line(int fd) {
  std::string line;
  while (line.size() < 64) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error("reading a line failed: " + std::string(std::strerror(errno)), errno);
    if (n == 0) return make_error("the connection closed before a full line (got '" + line + "')");
    if (c == '\n') return line;
    line.push_back(c);
  }
  return make_error("no newline in 64 bytes");
}

Result<UniqueFd> host_listen(const std::string& uds_path, uint32_t port) {
  std::string path = uds_path + "_" + std::to_string(port);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("socket path " + path + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd fd(raw);
  MOSS_CHECK(MOSS_SYS(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr)));
  MOSS_CHECK(MOSS_SYS(::listen(fd.get(), 16)));
  return fd;
}

Result<UniqueFd> host_accept(int listener, std::chrono::milliseconds timeout) {
  pollfd p{listener, POLLIN, 0};
  MOSS_TRY(int n, MOSS_SYS(::poll(&p, 1, static_cast<int>(timeout.count()))));
  if (n == 0) return make_error("no guest connection arrived in time", ETIMEDOUT);
  MOSS_TRY(int raw, MOSS_SYS(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)));
  UniqueFd fd(raw);
  timeval tv = to_timeval(std::chrono::milliseconds(5000));
  MOSS_CHECK(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  MOSS_CHECK(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
  return fd;
}

std::vector<uint8_t> read_exactly(int fd, size_t n) {
  std::vector<uint8_t> out(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, out.data() + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

bool reads_eof(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

bool drains_to_eof(int fd, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  std::vector<char> buf(64 * 1024);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
  }
}

}  // namespace moss::harness
