// The host side of the agent protocol (see client.h).
#include "guest/agent/client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <thread>

#include "base/syscall.h"

namespace moss::agent {
namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Waits for `events` on fd until the deadline: 1 ready, 0 timed out, -1 error (errno).
int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p = {fd, events, 0};
    int r = poll(&p, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    return r;
  }
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  return out;
}

Result<void> read_answer(int fd, uint32_t port, std::chrono::milliseconds timeout, Clock::time_point deadline,
                         bool* not_listening);

Result<void> handshake(int fd, uint32_t port, std::chrono::milliseconds timeout, bool* not_listening) {
  Clock::time_point deadline = Clock::now() + timeout;
  std::string connect = "CONNECT " + std::to_string(port) + "\n";
  size_t sent = 0;
  while (sent < connect.size()) {
    ssize_t w = send(fd, connect.data() + sent, connect.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *not_listening = errno == EPIPE || errno == ECONNRESET;
      return sys_error("send", "CONNECT " + std::to_string(port) + " to the vsock worker");
    }
    int r = wait_fd(fd, POLLOUT, deadline);
    if (r <= 0) return timeout_error("the vsock worker took no CONNECT request within " +
                                     std::to_string(timeout.count()) + " ms");
  }
  return read_answer(fd, port, timeout, deadline, not_listening);
}

// The vsock worker's answer to CONNECT <port>: "OK <n>\n", read byte by byte so nothing past
// the newline is taken.
Result<void> read_answer(int fd, uint32_t port, std::chrono::milliseconds timeout, Clock::time_point deadline,
                         bool* not_listening) {
  std::string line;
  for (;;) {
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    if (r == 1) {
      if (c == '\n') break;
      line += c;
      if (line.size() > 64) {
        return make_error("the vsock worker answered '" + printable(line.substr(0, 64)) + "...' to CONNECT " +
                          std::to_string(port) + ", not OK");
      }
      continue;
    }
    if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE))) {
      *not_listening = true;
      return make_error("the vsock worker closed the connection at CONNECT " + std::to_string(port) +
                        ": nothing listens on that port in the guest (is the guest agent up?)");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return sys_error("read", "the vsock worker's answer");
    }
    int w = wait_fd(fd, POLLIN, deadline);
    if (w <= 0) {
      return timeout_error("the vsock worker did not answer CONNECT " + std::to_string(port) + " within " +
                           std::to_string(timeout.count()) + " ms");
    }
  }
  // "OK <host port>": the number is the worker's local port for this connection.
  bool ok = line.size() > 3 && line.compare(0, 3, "OK ") == 0 && line.size() <= 3 + 10;
  for (size_t i = 3; ok && i < line.size(); ++i) ok = line[i] >= '0' && line[i] <= '9';
  if (!ok) {
    return make_error("the vsock worker answered '" + printable(line) + "' to CONNECT " + std::to_string(port) +
                      ", not OK");
  }
  return {};
}

bool is_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK);
}

}  // namespace

Result<void> vsock_handshake(int fd, uint32_t port, std::chrono::milliseconds timeout) {
  bool not_listening = false;
  return handshake(fd, port, timeout, &not_listening);
}

std::string connect_line(uint32_t port) { return "CONNECT " + std::to_string(port) + "\n"; }

Result<void> vsock_handshake_answer(int fd, uint32_t port, std::chrono::milliseconds timeout, bool* not_listening) {
  bool ignored = false;
  return read_answer(fd, port, timeout, Clock::now() + timeout, not_listening ? not_listening : &ignored);
}

Result<UniqueFd> connect_agent(const std::string& uds_path, std::chrono::milliseconds timeout, uint32_t port) {
  Clock::time_point deadline = Clock::now() + timeout;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (uds_path.size() >= sizeof(addr.sun_path)) {
    return make_error("the vsock socket path " + uds_path + " is longer than " +
                      std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  memcpy(addr.sun_path, uds_path.data(), uds_path.size());
  for (;;) {
    MOSS_TRY(int raw, MOSS_SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd s(raw);
    bool retry = false;
    Error err;
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      int e = errno;
      retry = e == ENOENT || e == ECONNREFUSED || e == EINTR;
      err = sys_error_code(e, "connect to", "the vsock socket " + uds_path);
    } else {
      auto left = std::chrono::milliseconds(ms_left(deadline));
      bool not_listening = false;
      auto r = handshake(s.get(), port, left < std::chrono::milliseconds(1) ? std::chrono::milliseconds(1) : left,
                         &not_listening);
      if (r) return s;
      retry = not_listening;
      err = r.error();
    }
    if (!retry || Clock::now() + std::chrono::milliseconds(20) >= deadline) {
      if (retry) err.message += " (gave up after " + std::to_string(timeout.count()) + " ms)";
      return err;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// ----------------------------------------------------------------- ExecClient --

ExecClient::ExecClient(UniqueFd sock, const ExecRequest& req, UserFds fds)
    : sock_(std::move(sock)), user_(fds), pty_(req.mode == Mode::kPty) {
  if (pty_) user_.err = -1;
  for (int s = 0; s < 2; ++s) {
    int fd = s == 0 ? user_.out : user_.err;
    if (fd < 0) {
      out_closed_[s] = true;
      continue;
    }
    struct stat st;
    if (fstat(fd, &st) == 0) {
      out_is_socket_[s] = S_ISSOCK(st.st_mode);
      out_blocking_[s] = !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || is_nonblocking(fd));
    }
  }
  int fl = fcntl(sock_.get(), F_GETFL);
  if (fl < 0 || fcntl(sock_.get(), F_SETFL, fl | O_NONBLOCK) != 0) {
    fail(sys_message("make", "the agent socket non-blocking", errno));
    return;
  }
  Frame hello;
  hello.type = MsgType::kHello;
  hello.version_min = kMinProtocolVersion;
  hello.version_max = kProtocolVersion;
  (void)encode(Direction::kToAgent, hello, &sock_out_);
  Frame exec;
  exec.type = MsgType::kExec;
  exec.exec = req;
  if (auto sent = encode(Direction::kToAgent, exec, &sock_out_); !sent.ok()) {
    fail("cannot send the program to the guest: " + sent.error().message);
    return;
  }
  if (user_.in < 0) {
    Frame eof;
    eof.type = MsgType::kStdinEof;
    (void)encode(Direction::kToAgent, eof, &sock_out_);
    stdin_done_ = true;
  }
}

void ExecClient::fail(std::string message) {
  if (failed_ || (exited_ && finished())) return;
  failed_ = true;
  outcome_ = make_error(std::move(message));
}

bool ExecClient::finished() const {
  if (failed_) return true;
  if (!exited_) return false;
  for (int s = 0; s < 2; ++s)
    if (!out_closed_[s] && outpos_[s] < outbuf_[s].size()) return false;
  return true;
}

std::vector<ExecClient::Watch> ExecClient::watches() const {
  std::vector<Watch> w;
  if (!sock_.valid()) return w;
  short sev = 0;
  if (!failed_ && !sock_eof_ && !exited_) sev |= POLLIN;
  if (sock_out_pos_ < sock_out_.size()) sev |= POLLOUT;
  if (sev) w.push_back({sock_.get(), sev});
  if (running() && !stdin_done_ && user_.in >= 0 && stdin_credit_ > 0 &&
      sock_out_.size() - sock_out_pos_ < kSockHighWater)
    w.push_back({user_.in, POLLIN});
  if (!failed_) {
    for (int s = 0; s < 2; ++s) {
      int fd = s == 0 ? user_.out : user_.err;
      if (!out_closed_[s] && outpos_[s] < outbuf_[s].size()) {
        // stdout and stderr may be one fd (2>&1): watch it once.
        if (s == 1 && fd == user_.out && !w.empty() && w.back().fd == fd) continue;
        w.push_back({fd, POLLOUT});
      }
    }
  }
  return w;
}

void ExecClient::on_ready(int fd, short revents) {
  if (revents == 0) return;
  if (fd == sock_.get()) {
    if (revents & POLLOUT) flush_socket();  // Also after a failure: a queued SHUTDOWN.
    if (!failed_ && !sock_eof_ && !exited_ && (revents & (POLLIN | POLLHUP | POLLERR))) on_socket_readable();
    return;
  }
  if (failed_) return;
  // One fd may be several of the user's (2>&1, a socket as stdin and stdout): act on what
  // this readiness is about, so a blocking fd is never read or written unready.
  if (revents & (POLLOUT | POLLHUP | POLLERR)) {
    if (fd == user_.out) write_output(0);
    if (fd == user_.err) write_output(1);
  }
  if (fd == user_.in && (revents & (POLLIN | POLLHUP | POLLERR))) read_stdin();
  flush_socket();
}

void ExecClient::on_socket_readable() {
  char buf[kReadChunk];
  ssize_t r = recv(sock_.get(), buf, sizeof(buf), MSG_DONTWAIT);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    if (!exited_) fail(sys_message("use", "the connection to the guest agent", errno));
    sock_eof_ = true;
    return;
  }
  if (r == 0) {
    sock_eof_ = true;
    if (!exited_) fail("the guest agent closed the connection before the program's exit status arrived");
    return;
  }
  dec_.feed(buf, static_cast<size_t>(r));
  Frame f;
  for (;;) {
    if (failed_) return;
    DecodeStatus s = dec_.next(&f);
    if (s == DecodeStatus::kNeedMore) break;
    if (s == DecodeStatus::kError) {
      fail("the guest agent sent a malformed message: " + dec_.error()->message);
      return;
    }
    on_frame(f);
  }
  for (int s = 0; s < 2; ++s) write_output(s);
  flush_socket();
}

void ExecClient::on_frame(const Frame& f) {
  if (!hello_) {
    if (f.type == MsgType::kError) {
      return fail("the guest agent refused the session: " + f.data);
    }
    if (f.type != MsgType::kHello || f.version_min != f.version_max || f.version_min < kMinProtocolVersion ||
        f.version_min > kProtocolVersion) {
      return fail("the guest agent did not answer HELLO with a version this host speaks");
    }
    hello_ = true;
    return;
  }
  if (exited_) return;  // Nothing may follow EXIT; the agent's CREDITs racing it are moot.
  switch (f.type) {
    case MsgType::kStarted:
      guest_pid_ = f.number;
      return;
    case MsgType::kStdout:
    case MsgType::kStderr: {
      int s = f.type == MsgType::kStdout ? 0 : 1;
      if (pty_ && s == 1) return fail("the guest agent sent stderr in pty mode");
      if (f.data.size() > out_allowed_[s]) return fail("the guest agent sent output beyond its credit");
      out_allowed_[s] -= f.data.size();
      if (out_closed_[s]) return;  // The user's reader is gone (the agent was told).
      if (outpos_[s] == outbuf_[s].size()) {
        outbuf_[s].clear();
        outpos_[s] = 0;
      }
      outbuf_[s].append(f.data);
      return;
    }
    case MsgType::kCredit:
      stdin_credit_ += f.number;
      if (stdin_credit_ > kMaxWindow) return fail("the guest agent granted stdin credit beyond the maximum window");
      return;
    case MsgType::kStreamClosed:
      stdin_done_ = true;  // The program closed its stdin: stop reading the user's.
      return;
    case MsgType::kError:
      if (f.error == ErrorCode::kExecFailed || f.error == ErrorCode::kResource) {
        result_.message = f.data;  // An EXIT follows.
        return;
      }
      return fail("the guest agent ended the session: " + f.data);
    case MsgType::kExit:
      exited_ = true;
      result_.exit = f.exit;
      outcome_ = result_;
      return;
    case MsgType::kHello:
      return fail("the guest agent sent HELLO twice");
    default:
      return fail(std::string("the guest agent sent an unexpected ") + std::string(type_name(f.type)));
  }
}

void ExecClient::read_stdin() {
  if (!running() || stdin_done_ || stdin_credit_ == 0) return;
  size_t want = stdin_credit_ < kReadChunk ? static_cast<size_t>(stdin_credit_) : kReadChunk;
  char buf[kReadChunk];
  ssize_t r = read(user_.in, buf, want);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (r <= 0) {
    // EOF, or an error reading (EIO: a terminal hung up): either way no more input.
    Frame eof;
    eof.type = MsgType::kStdinEof;
    (void)encode(Direction::kToAgent, eof, &sock_out_);
    stdin_done_ = true;
    return;
  }
  encode_data(MsgType::kStdin, buf, static_cast<size_t>(r), &sock_out_);
  stdin_credit_ -= static_cast<uint64_t>(r);
}

void ExecClient::write_output(int s) {
  int fd = s == 0 ? user_.out : user_.err;
  while (!out_closed_[s] && outpos_[s] < outbuf_[s].size()) {
    size_t n = outbuf_[s].size() - outpos_[s];
    if (out_blocking_[s] && !out_is_socket_[s] && n > PIPE_BUF) n = PIPE_BUF;
    ssize_t w = out_is_socket_[s] ? send(fd, outbuf_[s].data() + outpos_[s], n, MSG_DONTWAIT | MSG_NOSIGNAL)
                                  : write(fd, outbuf_[s].data() + outpos_[s], n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // EPIPE and friends: the reader is gone. The program learns it as a local one would.
      out_closed_[s] = true;
      outbuf_[s].clear();
      outpos_[s] = 0;
      if (running()) encode_stream_closed(s == 0 ? Stream::kStdout : Stream::kStderr, Direction::kToAgent, &sock_out_);
      return;
    }
    outpos_[s] += static_cast<size_t>(w);
    out_unreported_[s] += static_cast<uint32_t>(w);
    return_credit(s, false);
    if (out_blocking_[s] && !out_is_socket_[s]) break;  // One bounded write per readiness.
  }
  return_credit(s, outpos_[s] == outbuf_[s].size());
}

void ExecClient::return_credit(int s, bool force) {
  if (!running() || out_unreported_[s] == 0) return;
  if (!force && out_unreported_[s] < kInitialWindow / 4) return;
  encode_credit(s == 0 ? Stream::kStdout : Stream::kStderr, out_unreported_[s], Direction::kToAgent, &sock_out_);
  out_allowed_[s] += out_unreported_[s];
  out_unreported_[s] = 0;
}

void ExecClient::flush_socket() {
  while (sock_out_pos_ < sock_out_.size()) {
    ssize_t w = send(sock_.get(), sock_out_.data() + sock_out_pos_, sock_out_.size() - sock_out_pos_,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (!exited_) fail(sys_message("use", "the connection to the guest agent", errno));
      sock_out_.clear();
      sock_out_pos_ = 0;
      return;
    }
    sock_out_pos_ += static_cast<size_t>(w);
  }
  if (sock_out_pos_ == sock_out_.size()) {
    sock_out_.clear();
    sock_out_pos_ = 0;
  } else if (sock_out_pos_ >= (1u << 20)) {
    sock_out_.erase(0, sock_out_pos_);
    sock_out_pos_ = 0;
  }
}

void ExecClient::forward_signal(int signo) {
  if (!running() || signo < 1 || signo > static_cast<int>(kMaxSignal)) return;
  encode_simple(MsgType::kSignal, static_cast<uint32_t>(signo), &sock_out_);
  flush_socket();
}

void ExecClient::resize(uint16_t rows, uint16_t cols) {
  if (!running() || !pty_) return;
  Frame f;
  f.type = MsgType::kWinsize;
  f.rows = rows;
  f.cols = cols;
  (void)encode(Direction::kToAgent, f, &sock_out_);
  flush_socket();
}

void ExecClient::request_shutdown(int status) {
  if (status < 0 || status > 255) status = 125;
  encode_simple(MsgType::kShutdown, static_cast<uint32_t>(status), &sock_out_);
  flush_socket();
}

Result<void> ExecClient::poll_once(int timeout_ms) {
  std::vector<Watch> w = watches();
  std::vector<pollfd> fds;
  for (const Watch& x : w) fds.push_back({x.fd, x.events, 0});
  int r = poll(fds.data(), fds.size(), timeout_ms);
  if (r < 0) {
    if (errno == EINTR) return {};
    return sys_error("wait for", "the guest agent or the user's terminal");
  }
  for (const pollfd& p : fds)
    if (p.revents) on_ready(p.fd, p.revents);
  return {};
}

Result<void> send_shutdown(int sock, int status, std::chrono::milliseconds timeout) {
  Clock::time_point deadline = Clock::now() + timeout;
  std::string out;
  Frame hello;
  hello.type = MsgType::kHello;
  hello.version_min = kMinProtocolVersion;
  hello.version_max = kProtocolVersion;
  (void)encode(Direction::kToAgent, hello, &out);
  encode_simple(MsgType::kShutdown, static_cast<uint32_t>(status < 0 || status > 255 ? 125 : status), &out);
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t w = send(sock, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return sys_error("send", "the shutdown request to the guest agent");
    if (wait_fd(sock, POLLOUT, deadline) <= 0) return timeout_error("the guest agent took no shutdown request in time");
  }
  Decoder dec(Direction::kToHost);
  for (;;) {
    Frame f;
    DecodeStatus s = dec.next(&f);
    if (s == DecodeStatus::kError) return make_error("the guest agent sent a malformed message: " + dec.error()->message);
    if (s == DecodeStatus::kFrame) {
      if (f.type == MsgType::kHello) return {};
      if (f.type == MsgType::kError) return make_error("the guest agent refused the shutdown request: " + f.data);
      return make_error("the guest agent did not answer HELLO");
    }
    if (wait_fd(sock, POLLIN, deadline) <= 0) return timeout_error("the guest agent did not answer in time");
    char buf[256];
    ssize_t r = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
    // The request is out: a VM going down may drop the connection before the answer leaves it.
    if (r == 0) return {};
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      if (errno == ECONNRESET) return {};
      return sys_error("read", "the guest agent's answer");
    }
    dec.feed(buf, static_cast<size_t>(r));
  }
}

Result<ExecOutcome> run_exec(UniqueFd sock, const ExecRequest& req, ExecClient::UserFds fds) {
  ExecClient c(std::move(sock), req, fds);
  while (!c.finished()) MOSS_TRY_VOID(c.poll_once(-1));
  return c.outcome();
}

// ------------------------------------------------------------- generation --

namespace {

Result<std::string> host_entropy(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("draw", "entropy for the guest (getrandom)");
    got += static_cast<size_t>(r);
  }
  return out;
}

// Waits for `events` on `fd` until `deadline`: false on the time-out.
Result<bool> wait_until(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("wait for", "the guest agent");
    if (r > 0) return true;
  }
}

}  // namespace

Result<void> renew_generation(int fd, uint64_t generation, int64_t realtime_ns, std::chrono::milliseconds timeout) {
  MOSS_ASSERT(generation >= 1);
  MOSS_ASSERT(realtime_ns >= 0);
  Clock::time_point deadline = Clock::now() + timeout;
  std::string out;
  Frame hello;
  hello.type = MsgType::kHello;
  hello.version_min = hello.version_max = kGenerationVersion;
  MOSS_ASSERT(encode(Direction::kToAgent, hello, &out).ok());
  Frame g;
  g.type = MsgType::kGeneration;
  g.generation = generation;
  g.realtime_ns = realtime_ns;
  MOSS_TRY(g.data, host_entropy(kGenerationEntropyBytes));
  MOSS_ASSERT(encode(Direction::kToAgent, g, &out).ok());

  const std::string late = "the guest agent did not acknowledge generation " + std::to_string(generation) + " within " +
                           std::to_string(timeout.count()) + " ms";
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t w = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return sys_error("send", "the new generation to the guest agent");
    MOSS_TRY(bool ready, wait_until(fd, POLLOUT, deadline));
    if (!ready) return timeout_error(late);
  }

  Decoder dec(Direction::kToHost);
  bool hello_seen = false;
  for (;;) {
    Frame f;
    DecodeStatus s;
    while ((s = dec.next(&f)) == DecodeStatus::kFrame) {
      if (f.type == MsgType::kError) {
        return make_error("the guest agent refused the new generation: " + f.data);
      }
      if (!hello_seen) {
        if (f.type != MsgType::kHello || f.version_min != kGenerationVersion)
          return make_error("the guest agent answered something else than HELLO version 2");
        hello_seen = true;
        continue;
      }
      if (f.type != MsgType::kGenerationAck || f.generation != generation)
        return make_error("the guest agent answered the new generation with " + std::string(type_name(f.type)));
      return {};
    }
    if (s == DecodeStatus::kError) {
      return make_error("the guest agent sent a bad message: " + dec.error()->message);
    }
    char buf[4096];
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      dec.feed(buf, static_cast<size_t>(r));
      continue;
    }
    if (r == 0) return make_error("the guest agent closed the connection before acknowledging the new generation");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return sys_error("read", "the guest agent's answer");
    MOSS_TRY(bool ready, wait_until(fd, POLLIN, deadline));
    if (!ready) return timeout_error(late);
  }
}

}  // namespace moss::agent
