#include "broker/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "base/syscall.h"

namespace moss {

Result<pid_t> spawn_child(const ChildSpec& spec) {
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return make_error(std::string("cannot open /dev/null: ") + strerror(errno), errno);
  pid_t parent = getpid();
  MOSS_TRY(pid_t pid, MOSS_SYS(fork()));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Move the passed fds out of the way first, so that dup2 to 3+i cannot clobber a source.
    int high[64];
    size_t n = spec.fds.size() < 64 ? spec.fds.size() : 64;
    for (size_t i = 0; i < n; i++) high[i] = fcntl(spec.fds[i], F_DUPFD_CLOEXEC, 100);
    dup2(devnull, 0);
    dup2(2, 1);
    for (size_t i = 0; i < n; i++) dup2(high[i], static_cast<int>(3 + i));  // dup2 clears CLOEXEC.
    syscall(SYS_close_range, 3 + n, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(spec.path.c_str(), argv.data());
    const char msg[] = "moss: cannot execute the child process binary\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(devnull);
  return pid;
}

std::string describe_wait_status(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "stopped unexpectedly";
}

}  // namespace moss
