#include "policies/sandbox.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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

// A directory to keep (enter's keep_dirs), checked: its path and that path's components.
struct KeptDir {
  std::string path;                 // "/run/moss/cid-3", no trailing or doubled slashes.
  std::vector<std::string> parts;  // {"run", "moss", "cid-3"}
};

// Checks `dirs` (see enter() in sandbox.h) and drops any that another one already holds
// (duplicates, or under another kept directory: the recursive bind brings it along, and making
// its mount point would write into the host's directory). Errors are sentences.
Result<std::vector<KeptDir>> check_keep_dirs(const std::vector<std::string>& dirs) {
  std::vector<KeptDir> out;
  for (const auto& d : dirs) {
    auto bad = [&](const std::string& why) { return make_error("it cannot keep the directory '" + d + "': " + why); };
    if (d.empty() || d[0] != '/') return bad("it is not an absolute path");
    if (d.size() >= PATH_MAX) return bad("the path is too long");
    KeptDir k;
    for (size_t i = 1; i <= d.size();) {
      size_t slash = std::min(d.find('/', i), d.size());
      std::string part = d.substr(i, slash - i);
      if (part == "." || part == "..") return bad("it has a '" + part + "' component (give the path without them)");
      if (!part.empty()) {
        k.parts.push_back(part);
        k.path += "/" + part;
      }
      i = slash + 1;
    }
    if (k.parts.empty()) return bad("that is the whole host tree");
    if (k.parts[0] == "proc") return bad("the sandbox's own root is mounted over /proc while it is built");
    struct stat st;
    if (stat(k.path.c_str(), &st) != 0) return errno_error("it cannot keep the directory '" + d + "'");  // As bad(), with the errno.
    if (!S_ISDIR(st.st_mode)) return bad("it is not a directory");
    out.push_back(std::move(k));
  }
  // Sorted, a directory comes right before those under it.
  std::sort(out.begin(), out.end(), [](const KeptDir& a, const KeptDir& b) { return a.parts < b.parts; });
  std::vector<KeptDir> kept;
  for (auto& k : out) {
    bool held = !kept.empty() && kept.back().parts.size() <= k.parts.size() &&
                std::equal(kept.back().parts.begin(), kept.back().parts.end(), k.parts.begin());
    if (!held) kept.push_back(std::move(k));
  }
  return kept;
}

// Makes `k`'s path inside the new root (the working directory) and bind-mounts the host's
// directory there: recursively (in a user namespace a non-recursive bind of a tree with
// locked submounts fails), then remounted nosuid, nodev, noexec, keeping read-only if the
// host's mount is (a flag locked by the user namespace must stay, or the remount fails).
Result<void> keep_dir(const KeptDir& k) {
  std::string at = ".";
  for (const auto& part : k.parts) {
    at += "/" + part;
    // EEXIST: made for another kept directory with the same parents.
    if (mkdir(at.c_str(), 0555) != 0 && errno != EEXIST) {
      return sys_error("make", k.path + " in the new root");
    }
  }
  if (mount(k.path.c_str(), at.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return sys_error("bind-mount", k.path);
  }
  struct statvfs sv;
  if (statvfs(at.c_str(), &sv) != 0) return sys_error("read the flags of", k.path);
  unsigned long locked = (sv.f_flag & ST_RDONLY) ? MS_RDONLY : 0;  // Atime flags are kept by a bind remount.
  if (mount(nullptr, at.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC | locked, nullptr) != 0) {
    return sys_error("remount", k.path + " nosuid, nodev and noexec");
  }
  return {};
}

// An empty, read-only root: a tmpfs mounted over /proc (any existing directory would do)
// becomes the root, and the host's tree is detached from this mount namespace. The kept
// directories are bound into it first, so they stay when the host's tree goes.
Result<void> pivot_to_empty_root(const std::vector<KeptDir>& keep) {
  // An inode and a page for each directory leading to a kept one (at most that many).
  size_t dirs = 0;
  for (const auto& k : keep) dirs += k.parts.size();
  std::string options = "size=" + std::to_string(4 * (1 + dirs)) + "k,nr_inodes=" + std::to_string(4 + dirs) + ",mode=0555";
  MOSS_TRY_VOID(MOSS_SYS(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr)));
  MOSS_TRY_VOID(MOSS_SYS(mount("moss-sandbox", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str())));
  MOSS_TRY_VOID(MOSS_SYS(chdir("/proc")));
  for (const auto& k : keep) MOSS_TRY_VOID(keep_dir(k));
  // pivot_root(".", "."): the old root ends up stacked on the new one, and goes with the
  // detach below (pivot_root(2), "NOTES"). The kept directories are mounts on the new root's
  // directories, not the old root's, so they stay.
  MOSS_TRY_VOID(MOSS_SYS(syscall(SYS_pivot_root, ".", ".")));
  MOSS_TRY_VOID(MOSS_SYS(umount2(".", MNT_DETACH)));
  MOSS_TRY_VOID(MOSS_SYS(chdir("/")));
  MOSS_TRY_VOID(MOSS_SYS(mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            nullptr)));
  return {};
}

Result<void> drop_capabilities(int last_cap) {
  // Lock the securebits first (that needs CAP_SETPCAP): uid 0 in our user namespace must not
  // regain capabilities by any route (exec is denied by seccomp too).
  MOSS_TRY_VOID(MOSS_SYS(prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP |
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
  MOSS_TRY_VOID(MOSS_SYS(syscall(SYS_capget, &hdr, data)));
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

#ifdef MOSS_SECCOMP_TRAP_HOOK
// MOSS_SECCOMP_TRAP=1 (Debug builds only, see seccomp_trap_available()): a denied call raises
// SIGSYS here, which names it and ends the process, instead of killing it silently. Status
// 159 (128 + SIGSYS): a pid namespace's init cannot re-raise a signal on itself.
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

bool seccomp_trap_available() {
#ifdef MOSS_SECCOMP_TRAP_HOOK
  return true;
#else
  return false;
#endif
}

bool launched_jailed() {
  const char* env = std::getenv(kEnv);
  if (env == nullptr) return false;
  auto launch = parse_launch(env);
  return launch && launch->jailed;
}

void enter(Role role, const std::vector<std::string>& keep_dirs) {
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
#ifdef MOSS_SECCOMP_TRAP_HOOK
  if (const char* t = std::getenv(kSeccompTrapEnv); t && *t == '1') trap = true;
#endif
  auto policy = policy::builtin(role);
  if (!policy) fail(role, fd, "its built-in policy does not parse: " + policy.error().message);
  auto filter = policy::Filter::compile(*policy, trap);
  if (!filter) fail(role, fd, "its built-in policy does not compile: " + filter.error().message);

  auto keep = check_keep_dirs(keep_dirs);
  if (!keep) fail(role, fd, keep.error().message);
  int last_cap = last_capability();
  if (auto r = pivot_to_empty_root(*keep); !r) fail(role, fd, "cannot pivot into an empty root: " + r.error().message);
  if (auto r = drop_capabilities(last_cap); !r) fail(role, fd, r.error().message);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
    fail(role, fd, sys_message("set", "no_new_privs", errno));
  }
#ifdef MOSS_TEST_HOOKS
  run_probes_if_asked(role, &*filter);
#endif
#ifdef MOSS_SECCOMP_TRAP_HOOK
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
