#include "policies/probes.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "policies/seccomp_filter.h"

namespace moss::sandbox {
namespace {

// Each returns 0 when the forbidden thing worked, or the errno that stopped it.
int err(long r) { return r < 0 ? errno : 0; }

int open_host_file() { return err(open("/etc/passwd", O_RDONLY | O_CLOEXEC)); }

int inet_socket() { return err(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); }

int ptrace_traceme() { return err(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)); }

int mount_tmpfs() {
  // Unjailed, mount on a fresh directory of our own and undo it at once; jailed there is no
  // /tmp, so the root is the target (refused either way).
  char dir[] = "/tmp/moss-probe-XXXXXX";
  const char* target = mkdtemp(dir) ? dir : "/";
  int e = err(mount("moss-probe", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k"));
  if (e == 0) umount2(target, MNT_DETACH);
  if (target == dir) rmdir(dir);
  return e;
}

int exec_program() {
  // Only returns if execve failed; if it works, /bin/true exits 0: "allowed".
  char* argv[] = {const_cast<char*>("true"), nullptr};
  char* envp[] = {nullptr};
  execve("/bin/true", argv, envp);
  return errno;
}

int raise_capability() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return errno;
  data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective |= CAP_TO_MASK(CAP_SYS_ADMIN);
  data[CAP_TO_INDEX(CAP_SYS_ADMIN)].permitted |= CAP_TO_MASK(CAP_SYS_ADMIN);
  return err(syscall(SYS_capset, &hdr, data));
}

// kill(-1, 0) succeeds when there is any process besides ourselves and our pid namespace's
// init that we may signal: in the sandbox there is none.
int see_host_pids() { return err(kill(-1, 0)); }

int new_user_namespace() { return err(unshare(CLONE_NEWUSER)); }

// A new io_uring: its operations are no system calls, so a ring made inside the sandbox would
// reach what the policy forbids (moss-blk makes its restricted ring before its filter loads).
int new_io_uring() {
  io_uring_params p{};
  long fd = syscall(SYS_io_uring_setup, 4, &p);
  if (fd >= 0) close(static_cast<int>(fd));
  return err(fd);
}

struct Probe {
  const char* name;
  int (*run)();
};

const Probe kProbes[] = {
    {"open-host-file", open_host_file},         {"inet-socket", inet_socket},
    {"ptrace", ptrace_traceme},                 {"mount", mount_tmpfs},
    {"execve", exec_program},                   {"raise-capability", raise_capability},
    {"see-host-pids", see_host_pids},           {"new-user-namespace", new_user_namespace},
    {"io-uring-setup", new_io_uring},
};

bool asked(const char* env, Role role) {
  const char* v = std::getenv(env);
  if (v == nullptr || *v == '\0') return false;
  std::string s = std::string(",") + v + ",";
  return s.find(",all,") != std::string::npos || s.find(std::string(",") + role_name(role) + ",") != std::string::npos;
}

void say(const std::string& line) {
  std::string l = kProbePrefix + line + "\n";
  (void)!write(2, l.data(), l.size());
}

}  // namespace

std::vector<std::string> probe_names() {
  std::vector<std::string> names;
  for (const auto& p : kProbes) names.emplace_back(p.name);
  return names;
}

void run_probes_if_asked(Role role, const policy::Filter* filter) {
  if (!asked(kProbeEnv, role)) return;
  // "layers": a second pass without the seccomp filter shows what the namespaces, the empty
  // root and the dropped capabilities stop on their own.
  bool layers = filter != nullptr && std::string(std::getenv(kProbeEnv)).find("layers") != std::string::npos;
  for (int pass = 0; pass < (layers ? 2 : 1); pass++) {
    const policy::Filter* f = pass == 0 ? filter : nullptr;
    std::string who = std::string(role_name(role)) + (pass == 0 ? "" : "-without-seccomp");
    for (const auto& p : kProbes) {
      pid_t pid = fork();
      if (pid < 0) {
        say(who + " " + p.name + " not run (" + sys_message("fork", "", errno) + ")");
        continue;
      }
      if (pid == 0) {
        if (f && !f->load()) _exit(255);
        int e = p.run();
        _exit(e > 0 && e < 255 ? e : (e == 0 ? 0 : 254));
      }
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      std::string what;
      if (WIFSIGNALED(status)) {
        const char* abbrev = sigabbrev_np(WTERMSIG(status));
        what = std::string("blocked (killed by SIG") + (abbrev ? abbrev : "?") + ")";
      } else if (WEXITSTATUS(status) == 0) {
        what = "allowed";
      } else if (WEXITSTATUS(status) == 255) {
        what = "not run (the probe could not load the filter)";
      } else {
        const char* name = strerrorname_np(WEXITSTATUS(status));
        what = std::string("blocked (") + (name ? name : std::to_string(WEXITSTATUS(status)).c_str()) + ")";
      }
      say(who + " " + p.name + " " + what);
    }
  }
}

void run_own_probes_if_asked(Role role, const std::vector<OwnProbe>& probes) {
#ifndef MOSS_TEST_HOOKS
  (void)role;
  (void)probes;
  return;
#else
  if (!asked(kProbeEnv, role)) return;
  for (const auto& p : probes) {
    int e = p.run();
    const char* name = e > 0 ? strerrorname_np(e) : nullptr;
    say(std::string(role_name(role)) + " " + p.name + " " +
        (e == 0 ? std::string("allowed") : std::string("blocked (") + (name ? name : std::to_string(e).c_str()) + ")"));
  }
#endif
}

namespace {

void forbidden_syscall() {
  // syslog(SYSLOG_ACTION_SIZE_BUFFER): harmless, and in no moss policy.
  long r = syscall(SYS_syslog, 10, nullptr, 0);
  char buf[160];
  int n = std::snprintf(buf, sizeof buf, "moss: test hook: the forbidden system call syslog returned %ld (no seccomp filter?)\n", r);
  (void)!write(2, buf, static_cast<size_t>(n));
}

void on_sigusr2(int) { forbidden_syscall(); }

// KVM_CREATE_VM on every fd the process holds (the /dev/kvm fd is one): allowed while the
// vcpu process sets its VM up, and killed once it is done (vcpu.policy's second filter).
void create_vm_everywhere() {
  for (int fd = 0; fd < 1024; fd++) {
    long r = syscall(SYS_ioctl, fd, KVM_CREATE_VM, 0);
    if (r >= 0) {
      char buf[160];
      int n = std::snprintf(buf, sizeof buf, "moss: test hook: KVM_CREATE_VM on fd %d made VM fd %ld\n", fd, r);
      (void)!write(2, buf, static_cast<size_t>(n));
      return;
    }
  }
}

void on_sigusr2_create_vm(int) { create_vm_everywhere(); }

}  // namespace

void call_forbidden_syscall_if_asked(Role role) {
  const char* v = std::getenv(kForbiddenEnv);
  if (v == nullptr) return;
  std::string s = std::string(",") + v + ",", name = role_name(role);
  if (s.find("," + name + ",") != std::string::npos) {
    forbidden_syscall();
  } else if (s.find("," + name + ":on-sigusr2,") != std::string::npos) {
    struct sigaction sa {};
    sa.sa_handler = on_sigusr2;
    sigaction(SIGUSR2, &sa, nullptr);
  } else if (s.find("," + name + ":create-vm-on-sigusr2,") != std::string::npos) {
    struct sigaction sa {};
    sa.sa_handler = on_sigusr2_create_vm;
    sigaction(SIGUSR2, &sa, nullptr);
  }
}

}  // namespace moss::sandbox
