// One agent connection (see session.h).
#include "guest/agent/session.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "guest/agent/spawn.h"

namespace moss::agent {
namespace {

bool set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

// Return credit once this much was passed on (or when the buffer runs empty), so the host
// gets it in few frames yet never waits on a window it has used up.
constexpr uint32_t kCreditBatch = kInitialWindow / 4;

}  // namespace

Session::Session(UniqueFd sock, GenerationHandler on_generation)
    : sock_(std::move(sock)), on_generation_(on_generation) {
  if (!set_nonblock(sock_.get())) finish();
}

Session::~Session() { kill_program(); }

int Session::stdin_fd() const { return pty_ ? outs_[0].get() : in_.get(); }

void Session::kill_program() {
  // The program leads its own session and process group (spawn): end the whole group, so
  // nothing it started outlives the connection that asked for it.
  if (pid_ > 0 && !reaped_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
  }
}

void Session::finish() {
  kill_program();
  in_.reset();
  outs_[0].reset();
  outs_[1].reset();
  sock_.reset();
  phase_ = Phase::kDone;
}

size_t Session::fill(std::vector<pollfd>* fds) {
  if (phase_ == Phase::kDone) return 0;
  size_t before = fds->size();
  short sock_events = 0;
  if (phase_ != Phase::kClosing) sock_events |= POLLIN;
  if (out_pos_ < out_.size()) sock_events |= POLLOUT;
  if (sock_events) fds->push_back({sock_.get(), sock_events, 0});
  // Only fds we want something from: a pipe whose writer is gone reports POLLHUP whether asked
  // or not, so an fd we cannot serve now (no credit, full buffer) must not be polled at all.
  bool room = out_.size() - out_pos_ < kOutHighWater;
  if (phase_ == Phase::kRunning && !reaped_) {
    for (int s = 0; s < 2; ++s) {
      if (!outs_[s].valid()) continue;
      short ev = 0;
      if (out_credit_[s] > 0 && room && !(s == 0 && out_eof_)) ev |= POLLIN;
      if (s == 0 && pty_ && stdin_pos_ < stdin_.size()) ev |= POLLOUT;
      if (ev) fds->push_back({outs_[s].get(), ev, 0});
    }
    if (!pty_ && in_.valid() && stdin_pos_ < stdin_.size()) fds->push_back({in_.get(), POLLOUT, 0});
  }
  return fds->size() - before;
}

void Session::handle(const pollfd* fds, size_t n) {
  for (size_t i = 0; i < n && phase_ != Phase::kDone; ++i) {
    const pollfd& p = fds[i];
    if (p.revents == 0) continue;
    if (p.fd == sock_.get()) {
      if (p.revents & POLLOUT) flush_socket();
      if (phase_ != Phase::kDone && (p.revents & (POLLIN | POLLHUP | POLLERR))) on_socket_readable();
    } else if (p.fd == in_.get() || (pty_ && p.fd == outs_[0].get() && (p.revents & POLLOUT))) {
      write_stdin();
      if (pty_ && (p.revents & (POLLIN | POLLHUP | POLLERR))) read_output(0);
    } else if (p.fd == outs_[0].get()) {
      read_output(0);
    } else if (p.fd == outs_[1].get()) {
      read_output(1);
    }
  }
  progress();
}

void Session::on_socket_readable() {
  char buf[kReadChunk];
  ssize_t r = recv(sock_.get(), buf, sizeof(buf), MSG_DONTWAIT);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    finish();  // ECONNRESET and the like: the host is gone.
    return;
  }
  if (r == 0) {
    // The host closed its end: whatever runs for it is no longer wanted.
    finish();
    return;
  }
  dec_.feed(buf, static_cast<size_t>(r));
  Frame f;
  for (;;) {
    if (phase_ == Phase::kClosing || phase_ == Phase::kDone) return;
    DecodeStatus s = dec_.next(&f);
    if (s == DecodeStatus::kNeedMore) return;
    if (s == DecodeStatus::kError) {
      protocol_error(dec_.error()->message.c_str());
      return;
    }
    on_frame(f);
  }
}

void Session::protocol_error(const char* what) {
  send_error(ErrorCode::kProtocol, std::string("the agent received a bad message: ") + what);
  kill_program();
  phase_ = Phase::kClosing;
}

void Session::send_error(ErrorCode code, const std::string& message) {
  Frame e;
  e.type = MsgType::kError;
  e.error = code;
  e.data = message.substr(0, kMaxErrorBytes);
  for (char& c : e.data)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  if (!encode(Direction::kToHost, e, &out_).ok()) abort();
}

void Session::on_frame(const Frame& f) {
  switch (phase_) {
    case Phase::kHello: {
      if (f.type != MsgType::kHello) return protocol_error("the first message is not HELLO");
      if (f.version_min > kProtocolVersion || f.version_max < kMinProtocolVersion) {
        send_error(ErrorCode::kVersion, "the agent speaks protocol versions 1-2 only");
        phase_ = Phase::kClosing;
        return;
      }
      Frame h;
      h.type = MsgType::kHello;
      h.version_min = h.version_max = f.version_max < kProtocolVersion ? f.version_max : kProtocolVersion;
      version_ = h.version_max;
      if (!encode(Direction::kToHost, h, &out_).ok()) abort();
      phase_ = Phase::kExec;
      return;
    }
    case Phase::kExec:
      if (f.type == MsgType::kExec) return start(f.exec);
      if (f.type == MsgType::kShutdown) {
        shutdown_status_ = static_cast<int>(f.number);
        return;
      }
      if (f.type == MsgType::kGeneration) {
        if (version_ < kGenerationVersion) return protocol_error("GENERATION needs protocol version 2");
        return renew_generation(f);
      }
      return protocol_error("expected EXEC, GENERATION or SHUTDOWN after HELLO");
    case Phase::kRunning:
    case Phase::kExited:
      break;
    case Phase::kClosing:
    case Phase::kDone:
      return;
  }
  bool running = phase_ == Phase::kRunning && !reaped_;
  switch (f.type) {
    case MsgType::kStdin:
      if (f.data.size() > stdin_allowed_) return protocol_error("stdin beyond the granted credit");
      stdin_allowed_ -= f.data.size();
      if (stdin_closed_ || stdin_eof_ || !running) {
        // Nobody will read it: count it as passed on, so the host's window stays open.
        stdin_unreported_ += static_cast<uint32_t>(f.data.size());
        return;
      }
      if (stdin_pos_ == stdin_.size()) {
        stdin_.clear();
        stdin_pos_ = 0;
      }
      stdin_.append(f.data);
      return;
    case MsgType::kStdinEof:
      stdin_eof_ = true;
      return;
    case MsgType::kSignal:
      if (!running) return;
      if (pty_) {
        // The terminal's foreground process group, as a ^C typed there would reach.
        pid_t pg = tcgetpgrp(outs_[0].get());
        if (pg > 0 && kill(-pg, static_cast<int>(f.number)) == 0) return;
      }
      kill(-pid_, static_cast<int>(f.number));
      return;
    case MsgType::kWinsize:
      if (pty_ && outs_[0].valid()) {
        struct winsize ws = {};
        ws.ws_row = f.rows;
        ws.ws_col = f.cols;
        ioctl(outs_[0].get(), TIOCSWINSZ, &ws);  // The kernel sends SIGWINCH.
      }
      return;
    case MsgType::kShutdown:
      shutdown_status_ = static_cast<int>(f.number);
      return;
    case MsgType::kCredit: {
      int s = f.stream == Stream::kStdout ? 0 : 1;
      out_credit_[s] += f.number;
      if (out_credit_[s] > kMaxWindow) return protocol_error("credit beyond the maximum window");
      return;
    }
    case MsgType::kStreamClosed: {
      // The host's reader is gone: close our end, so the program's next write fails as it
      // would locally. In pty mode the master is also its input: keep it.
      int s = f.stream == Stream::kStdout ? 0 : 1;
      if (!pty_) outs_[s].reset();
      return;
    }
    default:
      return protocol_error("a message not allowed while a program runs");
  }
}

void Session::start(const ExecRequest& req) {
  int failure_status = 0;
  auto spawned = spawn(req, &failure_status);
  if (!spawned.ok()) {
    send_error(spawn_error_code(failure_status), spawned.error().message);
    Frame e;
    e.type = MsgType::kExit;
    e.exit.code = static_cast<uint32_t>(failure_status);
    if (!encode(Direction::kToHost, e, &out_).ok()) abort();
    phase_ = Phase::kExited;
    reaped_ = true;
    return;
  }
  Child& c = *spawned;
  pty_ = req.mode == Mode::kPty;
  pid_ = c.pid;
  in_ = std::move(c.in);
  outs_[0] = std::move(c.out);
  outs_[1] = std::move(c.err);
  encode_simple(MsgType::kStarted, static_cast<uint32_t>(pid_), &out_);
  phase_ = Phase::kRunning;
}

void Session::renew_generation(const Frame& f) {
  Result<void> applied = on_generation_ != nullptr ? on_generation_(f)
                                                   : Result<void>(Error("this agent cannot renew the guest's generation"));
  if (!applied.ok()) {
    send_error(ErrorCode::kResource, "cannot renew the generation: " + applied.error().message);
    phase_ = Phase::kClosing;
    return;
  }
  Frame ack;
  ack.type = MsgType::kGenerationAck;
  ack.generation = f.generation;
  if (!encode(Direction::kToHost, ack, &out_).ok()) abort();
  // Still in Phase::kExec: EXEC, SHUTDOWN or another GENERATION may follow.
}

void Session::child_exited(int status) {
  if (pid_ <= 0 || reaped_) return;
  reaped_ = true;
  wait_status_ = status;
  progress();
}

bool Session::read_output(int s) {
  UniqueFd& fd = outs_[s];
  if (s == 0 && out_eof_) {
    if (reaped_) fd.reset();
    return false;
  }
  if (!fd.valid() || out_credit_[s] == 0 || out_.size() - out_pos_ >= kOutHighWater) return false;
  size_t want = out_credit_[s] < kReadChunk ? static_cast<size_t>(out_credit_[s]) : kReadChunk;
  char buf[kReadChunk];
  ssize_t r = read(fd.get(), buf, want);
  if (r > 0) {
    encode_data(s == 0 ? MsgType::kStdout : MsgType::kStderr, buf, static_cast<size_t>(r), &out_);
    out_credit_[s] -= static_cast<uint64_t>(r);
    return true;
  }
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    // After the program ended, "nothing more now" is the end: what it wrote before exiting
    // is in the pipe already; a straggler it left behind does not hold the exit up.
    if (reaped_ && errno != EINTR) fd.reset();
    return false;
  }
  // EOF, or EIO from a pty master once no process has the terminal open.
  if (pty_ && !reaped_) {
    out_eof_ = true;
    return false;
  }
  fd.reset();
  return false;
}

void Session::write_stdin() {
  int fd = stdin_fd();
  while (fd >= 0 && stdin_pos_ < stdin_.size()) {
    ssize_t w = write(fd, stdin_.data() + stdin_pos_, stdin_.size() - stdin_pos_);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // EPIPE: the program closed its stdin. Tell the host to stop sending.
      stdin_unreported_ += static_cast<uint32_t>(stdin_.size() - stdin_pos_);
      stdin_.clear();
      stdin_pos_ = 0;
      stdin_closed_ = true;
      if (!pty_) in_.reset();
      encode_stream_closed(Stream::kStdin, Direction::kToHost, &out_);
      return;
    }
    stdin_pos_ += static_cast<size_t>(w);
    stdin_unreported_ += static_cast<uint32_t>(w);
  }
}

void Session::progress() {
  if (phase_ == Phase::kDone) return;
  if (phase_ == Phase::kRunning) {
    write_stdin();
    bool drained = stdin_pos_ == stdin_.size();
    if (drained && stdin_eof_ && !stdin_closed_) {
      stdin_closed_ = true;
      if (pty_) {
        // A terminal has no end of input; in canonical mode VEOF at the start of a line is
        // how a user types one.
        struct termios t;
        int fd = outs_[0].get();
        if (fd >= 0 && tcgetattr(fd, &t) == 0 && (t.c_lflag & ICANON)) {
          char eof = static_cast<char>(t.c_cc[VEOF]);
          (void)!write(fd, &eof, 1);
        }
      } else {
        in_.reset();
      }
    }
    if (stdin_unreported_ >= kCreditBatch || (stdin_unreported_ > 0 && drained)) {
      encode_credit(Stream::kStdin, stdin_unreported_, Direction::kToHost, &out_);
      stdin_allowed_ += stdin_unreported_;
      stdin_unreported_ = 0;
    }
    if (reaped_) {
      // Read what the program left in its pipes (or terminal), within the host's credit.
      for (int s = 0; s < 2; ++s)
        while (read_output(s)) {
        }
      if (!outs_[0].valid() && !outs_[1].valid()) {
        in_.reset();
        stdin_.clear();
        stdin_pos_ = 0;
        Frame e;
        e.type = MsgType::kExit;
        if (WIFSIGNALED(wait_status_)) {
          e.exit.signaled = true;
          e.exit.code = static_cast<uint32_t>(WTERMSIG(wait_status_));
          e.exit.core_dumped = WCOREDUMP(wait_status_);
        } else {
          e.exit.code = static_cast<uint32_t>(WEXITSTATUS(wait_status_));
        }
        if (!encode(Direction::kToHost, e, &out_).ok()) abort();
        phase_ = Phase::kExited;
      }
    }
  } else if (phase_ == Phase::kExited && stdin_unreported_ > 0) {
    encode_credit(Stream::kStdin, stdin_unreported_, Direction::kToHost, &out_);
    stdin_allowed_ += stdin_unreported_;
    stdin_unreported_ = 0;
  }
  flush_socket();
}

void Session::flush_socket() {
  while (phase_ != Phase::kDone && out_pos_ < out_.size()) {
    ssize_t w = send(sock_.get(), out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      finish();  // EPIPE, ECONNRESET: the host is gone.
      return;
    }
    out_pos_ += static_cast<size_t>(w);
  }
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
    if (phase_ == Phase::kClosing) finish();
  } else if (out_pos_ >= (1u << 20)) {
    out_.erase(0, out_pos_);
    out_pos_ = 0;
  }
}

}  // namespace moss::agent
