// moss-agent-exec: runs one program in a guest through its agent, from the host, with this
// process's stdin/stdout/stderr; exits with the program's status. A debugging tool and the
// reference for how the broker drives ExecClient from an event loop (here: poll, with signals
// as a self-pipe).
//
//   moss-agent-exec --uds PATH [--port N] [--timeout-ms N] [-t] [--env K=V]... [--workdir DIR]
//                   [--shutdown] -- CMD [ARG]...
//   moss-agent-exec --uds PATH --shutdown-only STATUS
//   moss-agent-exec --uds PATH --generation N [--realtime] [-- CMD [ARG]...]
//
// --uds: the vsock worker's Unix socket (CONNECT/OK handshake, retried until the guest listens
// or --timeout-ms, default 60000, passes). -t: a pty; if stdin is a terminal it is put in raw
// mode for the session and its size is forwarded (SIGWINCH). SIGINT/SIGTERM/SIGHUP/SIGQUIT
// are forwarded to the program. --shutdown: afterwards, end the VM with the program's status.
// --generation N: first, on a connection of its own, give the guest generation N (fresh host
// entropy; --realtime: also step its clock to the host's), as the broker does after a restore.
// Exit status: the program's (128+N for signal N), 125 if the session failed.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "guest/agent/client.h"

namespace {

using moss::agent::ExecClient;

int g_signal_pipe = -1;
void on_signal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_signal_pipe, &b, 1);
  errno = saved;
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "moss-agent-exec: %s\nusage: moss-agent-exec --uds PATH [--port N] [--timeout-ms N] [-t] [--env K=V]... "
               "[--workdir DIR] [--shutdown] -- CMD [ARG]...\n       moss-agent-exec --uds PATH --shutdown-only STATUS\n"
               "       moss-agent-exec --uds PATH --generation N [--realtime] [-- CMD [ARG]...]\n",
               why);
  std::exit(2);
}

bool parse_u32(const char* s, uint32_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > 0xffffffffUL) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string uds;
  uint32_t port = moss::agent::kAgentPort, timeout_ms = 60000, shutdown_only = 0;
  bool has_shutdown_only = false, shutdown = false, realtime = false;
  uint64_t generation = 0;
  moss::agent::ExecRequest req;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--") {
      ++i;
      break;
    } else if (a == "--uds") {
      uds = value();
    } else if (a == "--port") {
      if (!parse_u32(value(), &port)) usage("--port takes a number");
    } else if (a == "--timeout-ms") {
      if (!parse_u32(value(), &timeout_ms)) usage("--timeout-ms takes a number");
    } else if (a == "-t") {
      req.mode = moss::agent::Mode::kPty;
    } else if (a == "--env") {
      req.env.push_back(value());
    } else if (a == "--workdir") {
      req.cwd = value();
    } else if (a == "--shutdown") {
      shutdown = true;
    } else if (a == "--generation") {
      uint32_t g = 0;
      if (!parse_u32(value(), &g) || g == 0) usage("--generation takes a number from 1");
      generation = g;
    } else if (a == "--realtime") {
      realtime = true;
    } else if (a == "--shutdown-only") {
      if (!parse_u32(value(), &shutdown_only) || shutdown_only > 255) usage("--shutdown-only takes 0-255");
      has_shutdown_only = true;
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  for (; i < argc; ++i) req.argv.push_back(argv[i]);
  if (uds.empty()) usage("--uds PATH is required");
  if (req.argv.empty() && !has_shutdown_only && generation == 0) usage("no command after --");
  signal(SIGPIPE, SIG_IGN);

  if (generation != 0) {
    auto conn = moss::agent::connect_agent(uds, std::chrono::milliseconds(timeout_ms), port);
    if (!conn) {
      std::fprintf(stderr, "moss-agent-exec: %s\n", conn.error().message.c_str());
      return 125;
    }
    timespec now = {};
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ns = realtime ? static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec : 0;
    auto renewed = moss::agent::renew_generation(conn->get(), generation, ns, std::chrono::milliseconds(5000));
    if (!renewed) {
      std::fprintf(stderr, "moss-agent-exec: %s\n", renewed.error().message.c_str());
      return 125;
    }
    if (req.argv.empty() && !has_shutdown_only) return 0;
  }

  auto sock = moss::agent::connect_agent(uds, std::chrono::milliseconds(timeout_ms), port);
  if (!sock) {
    std::fprintf(stderr, "moss-agent-exec: %s\n", sock.error().message.c_str());
    return 125;
  }
  if (has_shutdown_only) {
    auto r = moss::agent::send_shutdown(sock->get(), static_cast<int>(shutdown_only), std::chrono::milliseconds(5000));
    if (!r) {
      std::fprintf(stderr, "moss-agent-exec: %s\n", r.error().message.c_str());
      return 125;
    }
    return 0;
  }

  bool tty = req.mode == moss::agent::Mode::kPty && isatty(STDIN_FILENO);
  struct termios saved = {};
  if (tty) {
    struct winsize ws = {};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
      req.rows = ws.ws_row;
      req.cols = ws.ws_col;
    }
    tcgetattr(STDIN_FILENO, &saved);
    struct termios raw = saved;
    cfmakeraw(&raw);
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    const char* term = getenv("TERM");
    if (term != nullptr) req.env.insert(req.env.begin(), std::string("TERM=") + term);
  }

  int sp[2];
  if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) != 0) return 125;
  g_signal_pipe = sp[1];
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigaction(sig, &sa, nullptr);

  ExecClient c(std::move(*sock), req, {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO});
  bool shutdown_sent = false;
  while (!c.finished() || (shutdown && !(shutdown_sent && c.flushed()))) {
    if (c.finished() && shutdown && !shutdown_sent) {
      c.request_shutdown(c.outcome() ? c.outcome()->shell_status() : 125);
      shutdown_sent = true;
      continue;
    }
    std::vector<pollfd> fds = {{sp[0], POLLIN, 0}};
    for (const ExecClient::Watch& w : c.watches()) fds.push_back({w.fd, w.events, 0});
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      unsigned char b;
      while (read(sp[0], &b, 1) == 1) {
        if (b == SIGWINCH) {
          struct winsize ws = {};
          if (tty && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) c.resize(ws.ws_row, ws.ws_col);
        } else {
          c.forward_signal(b);
        }
      }
    }
    for (size_t k = 1; k < fds.size(); ++k)
      if (fds[k].revents) c.on_ready(fds[k].fd, fds[k].revents);
  }
  if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  if (!c.outcome()) {
    std::fprintf(stderr, "moss-agent-exec: %s\n", c.outcome().error().message.c_str());
    return 125;
  }
  if (!c.outcome()->message.empty()) std::fprintf(stderr, "moss-agent-exec: %s\n", c.outcome()->message.c_str());
  return c.outcome()->shell_status();
}
