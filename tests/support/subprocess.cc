#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace moss::test {

namespace {
std::function<void(const std::vector<std::string>&)>& spawn_check() {
  static std::function<void(const std::vector<std::string>&)> check;
  return check;
}
}  // namespace

void set_spawn_check(std::function<void(const std::vector<std::string>& argv)> check) {
  spawn_check() = std::move(check);
}

void check_spawn(const std::vector<std::string>& argv) {
  if (spawn_check()) spawn_check()(argv);
}

Process::Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  check_spawn(argv);
  int o[2], e[2];
  if (pipe2(o, O_CLOEXEC) != 0 || pipe2(e, O_CLOEXEC) != 0) std::abort();
  start_ = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(o[1], 1);
    dup2(e[1], 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());  // PATH lookup for bare names (sh, qemu-storage-daemon).
    _exit(127);
  }
  setpgid(pid, pid);  // Also here, so a kill of the group cannot come before the child's setpgid.
  child_ = ChildProcess(pid, ChildProcess::Group::kGroup);
  close(o[1]);
  close(e[1]);
  out_fd_ = o[0];
  err_fd_ = e[0];
}

Process::~Process() {
  child_.reset();  // Kills the process group if still running, and reaps.
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void Process::pump(int timeout_ms) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  if (poll(fds, 2, timeout_ms) <= 0) return;
  char buf[65536];
  for (int i = 0; i < 2; i++) {
    if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
    ssize_t n = read(fds[i].fd, buf, sizeof buf);
    if (n > 0) (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
    if (n == 0) {
      close(fds[i].fd);
      (i == 0 ? out_fd_ : err_fd_) = -1;
    }
  }
}

bool Process::wait_for_output(const std::string& needle, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out_.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline || out_fd_ < 0) return false;
    pump(100);
  }
  return true;
}

Outcome Process::wait(std::chrono::seconds timeout) {
  Outcome r;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  const pid_t group = child_.pid();
  auto reap = [&] {
    auto ended = child_.try_wait();
    if (!ended.ok()) std::abort();  // Our own child: only a bug makes waitpid fail.
    if (*ended) status = **ended;
    return ended->has_value();
  };
  for (;;) {
    if (reap()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      // SIGTERM first, so that what hung can say what it was doing (moss prints the guest
      // console's last lines, maybe after a shell leading its group is gone); SIGKILL
      // whatever is left 15 s later.
      r.timed_out = true;
      (void)child_.signal(SIGTERM);
      auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      bool reaped = false;
      while (std::chrono::steady_clock::now() < grace) {
        if (!reaped) reaped = reap();
        if (reaped && out_fd_ < 0 && err_fd_ < 0) break;
        if (out_fd_ >= 0 || err_fd_ >= 0) {
          pump(50);
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      kill(-group, SIGKILL);  // What is left of the group, its leader reaped or not.
      if (!reaped) {
        (void)child_.signal(SIGKILL);
        auto st = child_.wait();
        if (st.ok()) status = *st;
      }
      break;
    }
    if (out_fd_ >= 0 || err_fd_ >= 0) {
      pump(50);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  while (out_fd_ >= 0 || err_fd_ >= 0) pump(200);  // Drain; the writers are gone.
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = out_;
  r.err = err_;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return r;
}

Outcome run(const std::vector<std::string>& argv, std::chrono::seconds timeout,
            const std::map<std::string, std::string>& env) {
  Process p(argv, env);
  return p.wait(timeout);
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t c;
  while (f >> c) out.push_back(c);
  return out;
}

bool process_exists(pid_t pid) {
  // A zombie still "exists" for kill(); look at its state instead.
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  if (!f) return false;
  std::string line;
  std::getline(f, line);
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < line.size() && line[close_paren + 2] != 'Z';
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

UniqueFd connect_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return s;
}

std::string build_dir() {
  const char* d = std::getenv("MOSS_BUILD_DIR");
  return d ? d : ".";
}

}  // namespace moss::test
