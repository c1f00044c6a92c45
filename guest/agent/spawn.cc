// Starting a program for the agent (see spawn.h).
#include "guest/agent/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)  // Linux 4.13: open the pty's slave from its master.
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char** environ;

namespace moss::agent {
namespace {

// What the child reports through the error pipe when it cannot get to exec.
enum Stage : int { kStageSetup = 1, kStageChdir = 2, kStageExec = 3 };
struct ChildError {
  int stage;
  int err;
};

// A program name or path for a message: control characters become '?', so the sentence stays
// one printable line whatever the host asked to run.
std::string printable(const std::string& s) {
  std::string out = s.substr(0, 200);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

// "cannot start the program: cannot OP WHAT: <errno text>".
Error resource_failure(std::string_view op, std::string_view what, int e, int* status) {
  *status = kStatusSetupFailed;
  return sys_error_code(e, op, what).add_context("cannot start the program");
}

bool make_pipe(UniqueFd* r, UniqueFd* w) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return false;
  r->reset(p[0]);
  w->reset(p[1]);
  return true;
}

bool set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

// Opens a new pty; *master and *slave are O_CLOEXEC, neither becomes our controlling tty.
int open_pty(UniqueFd* master, UniqueFd* slave, uint16_t rows, uint16_t cols) {
  master->reset(open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master->valid()) return errno;
  int unlock = 0;
  if (ioctl(master->get(), TIOCSPTLCK, &unlock) != 0) return errno;  // unlockpt()
  // grantpt() is a no-op on devpts. TIOCGPTPEER avoids the slave's path (and any race on it);
  // fall back to the path on kernels older than 4.13.
  int s = ioctl(master->get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) {
    unsigned n = 0;
    if (ioctl(master->get(), TIOCGPTN, &n) != 0) return errno;
    std::string path = "/dev/pts/" + std::to_string(n);
    s = open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) return errno;
  }
  slave->reset(s);
  if (rows != 0 || cols != 0) {
    struct winsize ws = {};
    ws.ws_row = rows;
    ws.ws_col = cols;
    if (ioctl(master->get(), TIOCSWINSZ, &ws) != 0) return errno;
  }
  return 0;
}

// In the forked child: report why we could not exec, then end. Only async-signal-safe calls.
[[noreturn]] void child_fail(int errfd, int stage, int e) {
  ChildError ce = {stage, e};
  ssize_t w;
  do {
    w = write(errfd, &ce, sizeof(ce));
  } while (w < 0 && errno == EINTR);
  _exit(127);
}

// Moves fds 0-2 of the program into place. src[i] may be any fd, even one of 0-2.
bool install_stdio(const int src[3]) {
  int tmp[3];
  for (int i = 0; i < 3; ++i) {
    tmp[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
    if (tmp[i] < 0) return false;
  }
  for (int i = 0; i < 3; ++i)
    if (dup2(tmp[i], i) < 0) return false;  // dup2 clears FD_CLOEXEC on 0-2.
  return true;
}

[[noreturn]] void run_child(char* const* argv, char** envp, const char* cwd, int errfd,
                            const int stdio[3], int ctty) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);  // SIGKILL/SIGSTOP just fail.

  if (setsid() < 0) child_fail(errfd, kStageSetup, errno);
  if (ctty >= 0 && ioctl(ctty, TIOCSCTTY, 0) != 0) child_fail(errfd, kStageSetup, errno);
  if (!install_stdio(stdio)) child_fail(errfd, kStageSetup, errno);
  // Whatever else the agent had open stays out of the program (our fds are O_CLOEXEC already;
  // this also covers fds a host test process inherited). Linux 5.11; older kernels: best effort.
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);

  if (chdir(cwd) != 0) child_fail(errfd, kStageChdir, errno);
  environ = envp;  // execvp searches the PATH of the new environment.
  execvp(argv[0], argv);
  child_fail(errfd, kStageExec, errno);
}

}  // namespace

std::vector<std::string> merge_env(const std::vector<std::string>& extra) {
  std::vector<std::string> env = {
      "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
      "HOME=/root",
      "TERM=linux",
  };
  for (const std::string& kv : extra) {
    size_t key_len = kv.find('=') + 1;  // Includes '='; the protocol guarantees one.
    bool replaced = false;
    for (std::string& e : env) {
      if (e.compare(0, key_len, kv, 0, key_len) == 0) {
        e = kv;
        replaced = true;
        break;
      }
    }
    if (!replaced) env.push_back(kv);
  }
  return env;
}

Result<Child> spawn(const ExecRequest& req, int* failure_status) {
  // Everything the child needs is built before fork, so it only makes system calls.
  std::vector<std::string> args = req.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = merge_env(req.env);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cwd = req.cwd.empty() ? "/" : req.cwd;

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w, master, slave;
  int stdio[3];
  int ctty = -1;
  if (req.mode == Mode::kPty) {
    if (int e = open_pty(&master, &slave, req.rows, req.cols)) return resource_failure("open", "a pty", e, failure_status);
    if (!set_nonblock(master.get())) return resource_failure("make", "the pty non-blocking", errno, failure_status);
    stdio[0] = stdio[1] = stdio[2] = ctty = slave.get();
  } else {
    if (!make_pipe(&in_r, &in_w) || !make_pipe(&out_r, &out_w) || !make_pipe(&err_r, &err_w))
      return resource_failure("create", "the program's pipes", errno, failure_status);
    // Our ends only: each end of a pipe is its own open file, the program's stay blocking.
    if (!set_nonblock(in_w.get()) || !set_nonblock(out_r.get()) || !set_nonblock(err_r.get()))
      return resource_failure("make", "the pipes non-blocking", errno, failure_status);
    stdio[0] = in_r.get();
    stdio[1] = out_w.get();
    stdio[2] = err_w.get();
  }
  UniqueFd err_pipe_r, err_pipe_w;
  if (!make_pipe(&err_pipe_r, &err_pipe_w)) return resource_failure("create", "the exec report pipe", errno, failure_status);

  pid_t pid = fork();
  if (pid < 0) return resource_failure("fork", "", errno, failure_status);
  if (pid == 0) run_child(argv.data(), envp.data(), cwd.c_str(), err_pipe_w.get(), stdio, ctty);

  // Parent. Our copies of the child's ends go; the pty slave stays open until the program has
  // it, so the master never sees "no slave" (EIO, POLLHUP) in between.
  in_r.reset();
  out_w.reset();
  err_w.reset();
  err_pipe_w.reset();
  ChildError ce = {};
  size_t got = 0;
  while (got < sizeof(ce)) {
    ssize_t r = read(err_pipe_r.get(), reinterpret_cast<char*>(&ce) + got, sizeof(ce) - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // EOF: exec closed the pipe (O_CLOEXEC), the program runs.
    got += static_cast<size_t>(r);
  }
  slave.reset();
  if (got == sizeof(ce)) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (ce.stage == kStageChdir) {
      *failure_status = kStatusNotFound;
      return sys_error_code(ce.err, "change to", "the working directory " + printable(cwd));
    }
    if (ce.stage == kStageExec) {
      *failure_status = ce.err == ENOENT ? kStatusNotFound : kStatusCannotExec;
      return sys_error_code(ce.err, "execute", printable(req.argv[0]));
    }
    *failure_status = kStatusSetupFailed;
    return sys_error_code(ce.err, "set up", "the program's session or terminal");
  }

  Child child;
  if (req.mode == Mode::kPty) {
    child.out = std::move(master);
  } else {
    child.in = std::move(in_w);
    child.out = std::move(out_r);
    child.err = std::move(err_r);
  }
  child.pid = pid;
  return child;
}

}  // namespace moss::agent
