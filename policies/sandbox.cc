#include "policies/sandbox.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/syscall.h"
#include "policies/probes.h"
#include "policies/seccomp_filter.h"

namespace moss::sandbox {
namespace {

std::string program(Role role) { return std::string("moss-") + role_name(role); }

void report(int fd, const std::string& line) {
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!write(fd, l.data(), l.size());  // One write: a pipe keeps it whole (< PIPE_BUF).
}

[[noreturn]] void fail(Role role, int fd, const std::string& sentence) {
  std::fprintf(stderr, "%s: cannot enter the sandbox: %s\n", program(role).c_str(), sentence.c_str());
  report(fd, "error " + sentence);
  _exit(1);
}

int last_capability() {
  // Read while /proc is still there; the kernel may know more capabilities than our headers.
  int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return CAP_LAST_CAP;
  char buf[16] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  int v = n > 0 ? std::atoi(buf) : 0;
  return v > 0 && v < 64 ? v : CAP_LAST_CAP;
}

// An empty, read-only root: a tmpfs mounted over /proc (any existing directory would do)
// becomes the root, and the host's tree is detached from this mount namespace.
Result<void> pivot_to_empty_root() {
  MOSS_CHECK(MOSS_SYS(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr)));
  MOSS_CHECK(MOSS_SYS(mount("moss-sandbox", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            "size=4k,nr_inodes=4,mode=0555")));
  MOSS_CHECK(MOSS_SYS(chdir("/proc")));
  // pivot_root(".", "."): the old root ends up stacked on the new one, and goes with the
  // detach below (pivot_root(2), "NOTES").
  MOSS_CHECK(MOSS_SYS(syscall(SYS_pivot_root, ".", ".")));
  MOSS_CHECK(MOSS_SYS(umount2(".", MNT_DETACH)));
  MOSS_CHECK(MOSS_SYS(chdir("/")));
  MOSS_CHECK(MOSS_SYS(mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            nullptr)));
  return {};
}

Result<void> drop_capabilities(int last_cap) {
  // Lock the securebits first (that needs CAP_SETPCAP): uid 0 in our user namespace must not
  // regain capabilities by any route (exec is denied by seccomp too).
  MOSS_CHECK(MOSS_SYS(prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                                   SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_NOROOT |
                                                   SECBIT_NOROOT_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                                                   SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
                            0, 0, 0)));
  capng_clear(CAPNG_SELECT_ALL);
  if (int rc = capng_apply(CAPNG_SELECT_ALL); rc != 0) {
    return make_error("libcap-ng could not drop the capabilities (capng_apply returned " + std::to_string(rc) + ")");
  }
  // Check, rather than trust: nothing effective, permitted, inheritable, ambient or bounding.
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  MOSS_CHECK(MOSS_SYS(syscall(SYS_capget, &hdr, data)));
  for (const auto& d : data) {
    if (d.effective || d.permitted || d.inheritable) return make_error("capabilities are left after dropping them all");
  }
  for (int c = 0; c <= last_cap; c++) {
    if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) != 0) {
      return make_error("capability " + std::to_string(c) + " is left in the bounding set");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) > 0) {
      return make_error("capability " + std::to_string(c) + " is left in the ambient set");
    }
  }
  return {};
}

#ifdef MOSS_TEST_HOOKS
// MOSS_SECCOMP_TRAP=1 (tests only): a denied call raises SIGSYS here, which names it and ends
// the process, instead of killing it silently. Status 159 (128 + SIGSYS): a pid namespace's
// init cannot re-raise a signal on itself.
void on_sigsys(int, siginfo_t* info, void*) {
  char buf[128];
  int n = std::snprintf(buf, sizeof buf, "moss: seccomp: system call %d is not allowed by this role's policy\n",
                        info->si_syscall);
  (void)!write(2, buf, static_cast<size_t>(n));
  _exit(128 + SIGSYS);
}
#endif

}  // namespace

std::optional<Launch> parse_launch(std::string_view value) {
  size_t a = value.find(':');
  if (a == std::string_view::npos) return std::nullopt;
  size_t b = value.find(':', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  auto role = role_from_name(value.substr(0, a));
  auto mode = value.substr(a + 1, b - a - 1);
  auto fd_text = value.substr(b + 1);
  int fd = -1;
  auto [end, ec] = std::from_chars(fd_text.data(), fd_text.data() + fd_text.size(), fd);
  if (!role || (mode != "jail" && mode != "none") || ec != std::errc() || end != fd_text.data() + fd_text.size() ||
      fd < 3) {
    return std::nullopt;
  }
  return Launch{*role, mode == "jail", fd};
}

std::string format_launch(const Launch& l) {
  return std::string(role_name(l.role)) + (l.jailed ? ":jail:" : ":none:") + std::to_string(l.report_fd);
}

void enter(Role role) {
  const char* env = std::getenv(kEnv);
  // Started by hand (another VMM, a test harness): the jail is the launcher's to begin, and
  // whoever started us gave us no more than they have. See the TODO in sandbox.h.
  if (env == nullptr) return;
  auto launch = parse_launch(env);
  if (!launch) fail(role, -1, std::string(kEnv) + "='" + env + "' is not what moss's launcher sets");
  if (launch->role != role) {
    fail(role, launch->report_fd,
         std::string("the launcher asked for the ") + role_name(launch->role) + " role, but this is " + program(role));
  }
  unsetenv(kEnv);
  int fd = launch->report_fd;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  // The launcher set it before exec, and exec keeps it; say it again so a role's main never has to.
  prctl(PR_SET_PDEATHSIG, SIGKILL);

  if (!launch->jailed) {
#ifdef MOSS_TEST_HOOKS
    run_probes_if_asked(role, nullptr);
#endif
    report(fd, "ok");
    close(fd);
    return;
  }

  bool trap = false;
#ifdef MOSS_TEST_HOOKS
  if (const char* t = std::getenv("MOSS_SECCOMP_TRAP"); t && *t == '1') trap = true;
#endif
  auto policy = policy::builtin(role);
  if (!policy) fail(role, fd, "its built-in policy does not parse: " + policy.error().message);
  auto filter = policy::Filter::compile(*policy, trap);
  if (!filter) fail(role, fd, "its built-in policy does not compile: " + filter.error().message);

  int last_cap = last_capability();
  if (auto r = pivot_to_empty_root(); !r) fail(role, fd, "cannot pivot into an empty root: " + r.error().message);
  if (auto r = drop_capabilities(last_cap); !r) fail(role, fd, r.error().message);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
    fail(role, fd, std::string("cannot set no_new_privs: ") + strerror(errno));
  }
#ifdef MOSS_TEST_HOOKS
  run_probes_if_asked(role, &*filter);
  if (trap) {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, nullptr);
  }
#endif
  if (auto r = filter->load(); !r) fail(role, fd, r.error().message);
  report(fd, "ok");
  close(fd);
#ifdef MOSS_TEST_HOOKS
  call_forbidden_syscall_if_asked(role);
#endif
}

}  // namespace moss::sandbox
