#include "tests/harness/vsock_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "base/syscall.h"

namespace moss::harness {
namespace {

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
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("connect to", path);
  }
  return fd;
}

}  // namespace

VsockProcess::VsockProcess(TempDir dir) : WorkerProcess("moss-vsock", std::move(dir)), uds_(this->dir() + "/vsock.sock") {}

Result<std::unique_ptr<VsockProcess>> VsockProcess::start(const VsockProcessOptions& o, std::chrono::milliseconds timeout) {
  if (auto why = unavailable()) return make_error("moss-vsock: " + *why);
  MOSS_TRY(TempDir dir, TempDir::create());
  std::unique_ptr<VsockProcess> p(new VsockProcess(std::move(dir)));
  std::vector<std::string> args = {binary_path(), "--guest-cid", std::to_string(o.guest_cid), "--uds-path", p->uds_};
  MOSS_TRY(auto common, p->common_args(o));
  args.insert(args.end(), common.begin(), common.end());
  MOSS_TRY_VOID(p->spawn(std::move(args)));
  std::vector<std::string> sockets = {p->uds_};
  if (!o.pass_fd) sockets.push_back(p->socket_path());
  MOSS_TRY_VOID(p->wait_for_sockets(sockets, timeout));
  return p;
}

// ---- Host programs ----

Result<UniqueFd> host_connect(const std::string& uds_path, uint32_t guest_port, std::chrono::milliseconds timeout) {
  MOSS_TRY(UniqueFd fd, unix_connect(uds_path, timeout));
  std::string line = "CONNECT " + std::to_string(guest_port) + "\n";
  MOSS_TRY_VOID(MOSS_SYS(::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL)));
  return fd;
}

Result<std::string> read_line(int fd) {
  std::string line;
  while (line.size() < 64) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("reading a line failed");
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
  MOSS_TRY_VOID(MOSS_SYS(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr)));
  MOSS_TRY_VOID(MOSS_SYS(::listen(fd.get(), 16)));
  return fd;
}

Result<UniqueFd> host_accept(int listener, std::chrono::milliseconds timeout) {
  pollfd p{listener, POLLIN, 0};
  MOSS_TRY(int n, MOSS_SYS(::poll(&p, 1, static_cast<int>(timeout.count()))));
  if (n == 0) return make_error("no guest connection arrived in time", ETIMEDOUT);
  MOSS_TRY(int raw, MOSS_SYS(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)));
  UniqueFd fd(raw);
  timeval tv = to_timeval(std::chrono::milliseconds(5000));
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
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
