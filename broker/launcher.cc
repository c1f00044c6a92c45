#include "broker/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <string_view>

#include "base/fd.h"
#include "base/syscall.h"
#include "policies/sandbox.h"

extern char** environ;

#if defined(__SANITIZE_ADDRESS__)
#define MOSS_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOSS_ASAN_BUILD 1
#endif
#endif

namespace moss {
namespace {

// See child_environment_names() in launcher.h.
constexpr const char* kChildEnvironment[] = {
    "MOSS_LOG",
    "MOSS_TEST_PROBE",
    "MOSS_TEST_FORBIDDEN_SYSCALL",
    "MOSS_SECCOMP_TRAP",
#ifdef MOSS_ASAN_BUILD
    "ASAN_OPTIONS",
    "UBSAN_OPTIONS",
    "LSAN_OPTIONS",
#endif
};

// Steps of the child's set-up before exec. On failure the child writes "E<step> <errno>" on
// the report pipe (it may only make async-signal-safe calls) and the broker words it.
enum Step : int {
  kStepParentGone = 1,
  kStepSetgroups,
  kStepUidMap,
  kStepGidMap,
  kStepHostname,
  kStepRlimit,
  kStepNoNewPrivs,
  kStepFds,
  kStepExec,
};

const char* step_text(int step) {
  switch (step) {
    case kStepParentGone: return "the broker was gone before the child started";
    case kStepSetgroups: return "cannot write /proc/self/setgroups in its user namespace";
    case kStepUidMap: return "cannot map its user id (/proc/self/uid_map)";
    case kStepGidMap: return "cannot map its group id (/proc/self/gid_map)";
    case kStepHostname: return "cannot set its host name";
    case kStepRlimit: return "cannot set its resource limits";
    case kStepNoNewPrivs: return "cannot set no_new_privs";
    case kStepFds: return "cannot arrange its file descriptors";
    case kStepExec: return "cannot execute the program";
  }
  return "failed";
}

// Everything the child needs, prepared before clone: after it, the child may only make
// async-signal-safe calls (no allocation).
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const int* fds;
  size_t nfds;
  int devnull, stderr_fd, report_fd, broker_pidfd;
  bool jail;
  char uid_map[64], gid_map[64];
  char hostname[32];
  rlimit limits[5];
  int limit_ids[5];
};

void child_fail(int report_fd, int step) {
  // "E<step> <errno>\n", by hand: snprintf is not async-signal-safe.
  int e = errno;
  char buf[32];
  size_t n = 0;
  buf[n++] = 'E';
  char digits[12];
  for (int v : {step, e}) {
    int d = 0;
    unsigned u = static_cast<unsigned>(v);
    do {
      digits[d++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u && d < 11);
    while (d) buf[n++] = digits[--d];
    buf[n++] = v == step ? ' ' : '\n';
  }
  (void)!write(report_fd, buf, n);
  _exit(127);
}

bool write_file(const char* path, const char* text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t len = strlen(text);
  bool ok = write(fd, text, len) == static_cast<ssize_t>(len);
  int e = errno;
  close(fd);
  errno = e;
  return ok;
}

[[noreturn]] void run_child(const ChildPlan& p) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // If the broker died before the line above, no signal will come: check it is still there
  // (its pidfd turns readable when it exits; getppid() says nothing in a new pid namespace).
  if (p.broker_pidfd >= 0) {
    pollfd pfd{p.broker_pidfd, POLLIN, 0};
    if (poll(&pfd, 1, 0) != 0) child_fail(p.report_fd, kStepParentGone);
  }
  // Move every fd we keep above the range 0..3+n first, so that dup2 cannot clobber a source.
  int high[64];
  size_t n = p.nfds;
  for (size_t i = 0; i < n; i++) {
    high[i] = fcntl(p.fds[i], F_DUPFD_CLOEXEC, 100);
    if (high[i] < 0) child_fail(p.report_fd, kStepFds);
  }
  int report = fcntl(p.report_fd, F_DUPFD_CLOEXEC, 100);
  int err = fcntl(p.stderr_fd, F_DUPFD_CLOEXEC, 100);
  if (report < 0 || err < 0) child_fail(p.report_fd, kStepFds);
  if (dup2(p.devnull, 0) < 0 || dup2(err, 1) < 0 || dup2(err, 2) < 0) child_fail(report, kStepFds);
  for (size_t i = 0; i < n; i++) {
    // dup2 clears CLOEXEC. The numbers are PassedFds's: kFirst + i.
    if (dup2(high[i], sandbox::PassedFds::kFirst + static_cast<int>(i)) < 0) child_fail(report, kStepFds);
  }
  int report_target = sandbox::PassedFds::kFirst + static_cast<int>(n);
  if (dup2(report, report_target) < 0) child_fail(report, kStepFds);
  syscall(SYS_close_range, report_target + 1, ~0u, 0);
  if (p.jail) {
    // Root in the new user namespace is the broker's uid and gid, nothing else. An
    // unprivileged process may write only this one-line map, and gid_map only after giving up
    // setgroups.
    if (!write_file("/proc/self/setgroups", "deny")) child_fail(report_target, kStepSetgroups);
    if (!write_file("/proc/self/uid_map", p.uid_map)) child_fail(report_target, kStepUidMap);
    if (!write_file("/proc/self/gid_map", p.gid_map)) child_fail(report_target, kStepGidMap);
    if (sethostname(p.hostname, strlen(p.hostname)) != 0) child_fail(report_target, kStepHostname);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(report_target, kStepNoNewPrivs);
    // After the fds are in place: RLIMIT_NOFILE may be below the numbers used to move them.
    for (size_t i = 0; i < 5; i++) {
      if (setrlimit(static_cast<__rlimit_resource>(p.limit_ids[i]), &p.limits[i]) != 0) {
        child_fail(report_target, kStepRlimit);
      }
    }
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(p.path, p.argv, p.envp);
  child_fail(report_target, kStepExec);
  _exit(127);
}

// The child's identity in its namespaces (root mapped to our uid and gid, its host name) and
// its rlimits, prepared before clone.
void plan_identity_and_limits(ChildPlan& plan, const jail::Sandbox& sb) {
  std::snprintf(plan.uid_map, sizeof plan.uid_map, "0 %u 1\n", static_cast<unsigned>(geteuid()));
  std::snprintf(plan.gid_map, sizeof plan.gid_map, "0 %u 1\n", static_cast<unsigned>(getegid()));
  std::snprintf(plan.hostname, sizeof plan.hostname, "moss-%s", sandbox::role_name(sb.role));
  const std::pair<int, uint64_t> limits[5] = {{RLIMIT_NOFILE, sb.limits.nofile},
                                              {RLIMIT_NPROC, sb.limits.nproc},
                                              {RLIMIT_FSIZE, sb.limits.fsize},
                                              {RLIMIT_MEMLOCK, sb.limits.memlock},
                                              {RLIMIT_CORE, 0}};  // A core file would hold guest memory.
  for (size_t i = 0; i < 5; i++) {
    plan.limit_ids[i] = limits[i].first;
    plan.limits[i] = {limits[i].second, limits[i].second};
  }
  // A child must not ask for more than the broker has: lowering is all it can do.
  for (size_t i = 0; i < 5; i++) {
    rlimit cur;
    if (getrlimit(static_cast<__rlimit_resource>(plan.limit_ids[i]), &cur) == 0 && cur.rlim_max != RLIM_INFINITY &&
        plan.limits[i].rlim_max > cur.rlim_max) {
      plan.limits[i] = {cur.rlim_max, cur.rlim_max};
    }
  }
}

std::string what_child(const ChildSpec& spec) {
  return std::string("the ") + sandbox::role_name(spec.sandbox.role) + " process";
}

// Reads the child's one-line report; returns "" on end of file (the child is gone).
Result<std::string> read_report(int fd, int timeout_ms) {
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  std::string line;
  for (;;) {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed >= timeout_ms) return timeout_error("no report within " + std::to_string(timeout_ms) + " ms");
    pollfd pfd{fd, POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(timeout_ms - elapsed));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error("poll failed");
    if (r == 0) continue;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line;
    line.append(buf, static_cast<size_t>(n));
    if (line.find('\n') != std::string::npos) return line.substr(0, line.find('\n'));
  }
}

std::string clone_hint(int err) {
  if (err == EPERM || err == EACCES) {
    return " (this host refuses user namespaces to moss: they may be disabled (sysctl "
           "kernel.unprivileged_userns_clone, an AppArmor or SELinux rule), or moss runs in a chroot, where the "
           "kernel never allows them)";
  }
  if (err == ENOSPC || err == EUSERS) return " (the host's limit on namespaces is reached: sysctl user.max_user_namespaces)";
  if (err == EINVAL) return " (this kernel lacks one of the namespace kinds moss needs)";
  return "";
}

// The child `pid` was cloned: returns once it reports on `report_fd` that it entered its
// sandbox; otherwise kills and reaps it and says why (spawn_child()).
Result<pid_t> await_jail(const ChildSpec& spec, pid_t pid, int report_fd, int* exit_status) {
  auto reaped = [&](const std::string& why) -> Error {
    kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return make_error(what_child(spec) + " (" + spec.path + ") " + why);
  };
  auto line = read_report(report_fd, spec.enter_timeout_ms);
  if (!line) {
    if (line.error().is_timeout()) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.1f", spec.enter_timeout_ms / 1000.0);
      return reaped(std::string("did not enter its sandbox within ") + secs +
                    " s (its main() must call moss::sandbox::enter first)");
    }
    return reaped("could not be watched: " + line.error().message);
  }
  if (*line == "ok") return pid;
  if (line->rfind("error ", 0) == 0) return reaped("could not enter its sandbox: " + line->substr(6));
  if (!line->empty() && (*line)[0] == 'E') {
    int step = 0, e = 0;
    std::sscanf(line->c_str(), "E%d %d", &step, &e);
    return reaped(errno_message("could not be started: " + std::string(step_text(step)), e));
  }
  if (line->empty()) {
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    // ECHILD: the child ended on its own (after saying why on stderr, if it could).
    if (exit_status != nullptr) *exit_status = status;
    return make_error(what_child(spec) + " (" + spec.path + ") " + describe_wait_status(status) +
                          " before it entered its sandbox",
                      ECHILD);
  }
  return reaped("sent a report moss does not understand: '" + *line + "'");
}

}  // namespace

std::vector<std::string_view> child_environment_names() {
  return std::vector<std::string_view>(std::begin(kChildEnvironment), std::end(kChildEnvironment));
}

std::vector<std::string> child_environment(char* const* env, const sandbox::Launch& launch) {
  std::vector<std::string> out;
  for (char* const* e = env; e != nullptr && *e != nullptr; e++) {
    std::string_view var(*e);
    std::string_view name = var.substr(0, var.find('='));
    if (name.size() == var.size()) continue;  // No '=': not a variable.
    for (const char* keep : kChildEnvironment) {
      if (name == keep) {
        out.emplace_back(var);
        break;
      }
    }
  }
#ifdef MOSS_ASAN_BUILD
  // LeakSanitizer's check at exit stops the world with ptrace and a clone the jail forbids, so
  // a jailed child of a sanitizer build would die of SIGSYS on its way out: leaks are checked
  // in the unjailed tests instead. (An option given later in ASAN_OPTIONS wins.)
  if (launch.jailed) {
    auto asan = std::find_if(out.begin(), out.end(), [](const std::string& v) { return v.rfind("ASAN_OPTIONS=", 0) == 0; });
    if (asan == out.end()) {
      out.emplace_back("ASAN_OPTIONS=detect_leaks=0");
    } else {
      *asan += ":detect_leaks=0";
    }
  }
#endif
  out.push_back(std::string(sandbox::kEnv) + "=" + sandbox::format_launch(launch));
  return out;
}

Result<pid_t> spawn_child(const ChildSpec& spec, int* exit_status) {
  const jail::Sandbox& sb = spec.sandbox;
  if (spec.fds.size() > 60) return make_error("internal error: too many fds for a child");
  if (sb.limits.nofile == 0 || sb.limits.nproc == 0) {
    return make_error("internal error: " + what_child(spec) + " was given no sandbox limits (set ChildSpec::sandbox, "
                      "e.g. to jail::worker(...))");
  }
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  int report_pipe[2];
  MOSS_TRY_VOID(MOSS_SYS(pipe2(report_pipe, O_CLOEXEC)));
  UniqueFd report_read(report_pipe[0]), report_write(report_pipe[1]);
  sandbox::Launch launch{sb.role, sb.enabled, spec.fds.next()};
  std::vector<std::string> env_store = child_environment(environ, launch);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);

  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return sys_error("open /dev/null");
  UniqueFd devnull_owned(devnull);
  // -1 on kernels before 5.3: the child then cannot notice a broker that died before its
  // PR_SET_PDEATHSIG, a window of microseconds.
  UniqueFd broker_pidfd(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));

  ChildPlan plan{};
  plan.path = spec.path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.fds = spec.fds.ours().data();
  plan.nfds = spec.fds.size();
  plan.devnull = devnull;
  plan.stderr_fd = spec.stderr_fd;
  plan.report_fd = report_write.get();
  plan.broker_pidfd = broker_pidfd.get();
  plan.jail = sb.enabled;
  plan_identity_and_limits(plan, sb);

  long flags = SIGCHLD;
  if (sb.enabled) {
    flags |= CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP;
  }
  // A raw clone is a fork with namespaces; the child runs run_child and execs.
  long pid = syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) {
    int e = errno;
    return make_error(sys_message("create", "the namespaces for " + what_child(spec) + "'s sandbox", e) + clone_hint(e) +
                          "; --no-sandbox runs without one, for debugging only",
                      e);
  }
  if (pid == 0) run_child(plan);

  report_write.reset();
  return await_jail(spec, static_cast<pid_t>(pid), report_read.get(), exit_status);
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
