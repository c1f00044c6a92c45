// The launcher and the sandbox with real children (host-only: no KVM needed). moss-blk gets a
// socketpair end as its vhost-user connection and a memfd as its disk; moss-vsock the same
// connection and a fresh directory for its --uds-path (the one its jail keeps); moss-vcpu gets
// a control socket and is probed before it would need KVM. The probes (policies/probes.h) run
// inside each child's sandbox and say what they could do; the same probes unjailed
// (--no-sandbox) must succeed, which proves they can fail.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/fd.h"
#include "broker/jail.h"
#include "broker/launcher.h"
#include "devices/blk/module.h"
#include "devices/vsock/module.h"
#include "devices/null/module.h"
#include "policies/probes.h"

namespace moss {
namespace {

using sandbox::Role;

std::string build_dir() {
  const char* b = std::getenv("MOSS_BUILD_DIR");
  return b ? b : ".";
}

// Sets environment variables for the children of one test, and removes them after.
struct ScopedEnv {
  std::vector<std::string> names;
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (auto [k, v] : vars) {
      setenv(k, v, 1);
      names.emplace_back(k);
    }
    // The sanitizers' leak check at exit needs ptrace and /proc, which the sandbox forbids.
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    names.emplace_back("ASAN_OPTIONS");
  }
  ~ScopedEnv() {
    for (const auto& n : names) unsetenv(n.c_str());
  }
};

// A directory of our own under /tmp, removed with everything in it.
struct ScopedDir {
  std::string path;
  static ScopedDir make() {
    ScopedDir d;
    char tmpl[] = "/tmp/moss-jail-test-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) d.path = tmpl;
    EXPECT_FALSE(d.path.empty()) << "mkdtemp: " << strerror(errno);
    return d;
  }
  ScopedDir() = default;
  ScopedDir(ScopedDir&& o) noexcept : path(std::move(o.path)) { o.path.clear(); }
  ScopedDir& operator=(ScopedDir&& o) noexcept {
    remove();
    path = std::move(o.path);
    o.path.clear();
    return *this;
  }
  ~ScopedDir() { remove(); }
  void remove() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
    path.clear();
  }
};

// A started child, its peer ends, and its captured stderr.
struct Child {
  pid_t pid = -1;
  UniqueFd peer;     // Our end of its socket (vhost-user for blk and vsock, control for vcpu).
  UniqueFd err_read;
  Error error;       // Why spawn_child failed, if it did.
  ScopedDir dir;     // vsock: the directory of its --uds-path, dir.path + "/vsock.sock".

  // Closes its socket, waits for it to exit and returns everything it wrote to stderr.
  std::string finish(int* status_out = nullptr) {
    peer.reset();
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    if (status_out) *status_out = status;
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(err_read.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

Child start(Role role, bool jailed) {
  Child c;
  int err[2];
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  c.err_read.reset(err[0]);
  UniqueFd err_write(err[1]);
  ChildSpec spec;
  spec.stderr_fd = err_write.get();
  int sv[2];
  UniqueFd theirs, disk;
  if (role == Role("blk")) {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    disk.reset(memfd_create("moss-jail-test-disk", MFD_CLOEXEC));
    EXPECT_EQ(ftruncate(disk.get(), 1 << 20), 0);
    spec.path = build_dir() + "/moss-blk";
    int fd = spec.pass_fd(sv[1]);
    int disk_fd = spec.pass_fd(disk.get());
    spec.argv = {"moss-blk", "--fd", std::to_string(fd), "--disk-fd", std::to_string(disk_fd), "--disk", "test.img"};
    spec.sandbox = jail::worker(Role("blk"), device::blk::limits(1, 1 << 20), jailed);
  } else if (role == Role("vsock")) {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    c.dir = ScopedDir::make();
    spec.path = build_dir() + "/moss-vsock";
    spec.argv = {"moss-vsock", "--fd", std::to_string(spec.pass_fd(sv[1])), "--guest-cid", "3", "--uds-path",
                 c.dir.path + "/vsock.sock"};
    spec.sandbox = jail::worker(Role("vsock"), device::vsock::limits(), jailed);
  } else if (role == Role("null")) {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    spec.path = build_dir() + "/moss-null";
    spec.argv = {"moss-null", "--fd", std::to_string(spec.pass_fd(sv[1])), "--capacity", "1048576"};
    spec.sandbox = jail::worker(Role("null"), device::null::limits(1), jailed);
  } else {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    disk.reset(open("/dev/null", O_RDWR | O_CLOEXEC));  // Stands in for /dev/kvm and the kernel.
    spec.path = build_dir() + "/moss-vcpu";
    spec.argv = {"moss-vcpu", "--control-fd", std::to_string(spec.pass_fd(sv[1]))};
    spec.pass_fd(disk.get());
    spec.pass_fd(disk.get());
    spec.sandbox = jail::vcpu(1, 0, 0, 64 << 20, jailed);
  }
  c.peer.reset(sv[0]);
  theirs.reset(sv[1]);
  auto pid = spawn_child(spec);
  if (pid) c.pid = *pid;
  else c.error = pid.error();
  return c;
}

// probe name -> its result ("blocked (ENOENT)"), from the children's stderr.
std::map<std::string, std::string> probe_results(const std::string& err, Role role) {
  std::map<std::string, std::string> out;
  std::istringstream in(err);
  std::string line, prefix = std::string(sandbox::kProbePrefix) + sandbox::role_name(role) + " ";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::string rest = line.substr(prefix.size());
    size_t sp = rest.find(' ');
    out[rest.substr(0, sp)] = rest.substr(sp + 1);
  }
  return out;
}

void expect_all_blocked(Role role) {
  ScopedEnv env({{sandbox::kProbeEnv, "all"}});
  Child c = start(role, true);
  ASSERT_GT(c.pid, 0) << c.error.message;
  std::string err = c.finish();
  auto results = probe_results(err, role);
  for (const auto& [name, result] : results) std::printf("  %s %s: %s\n", sandbox::role_name(role), name.c_str(), result.c_str());
  for (const auto& name : sandbox::probe_names()) {
    ASSERT_TRUE(results.count(name)) << "no result for probe " << name << "; stderr:\n" << err;
    EXPECT_EQ(results[name].rfind("blocked (", 0), 0u) << sandbox::role_name(role) << " " << name << ": " << results[name];
  }
  // The ones only seccomp can stop must have been stopped by it.
  for (const char* name : {"inet-socket", "ptrace", "mount", "execve", "new-user-namespace", "io-uring-setup"}) {
    EXPECT_EQ(results[name], "blocked (killed by SIGSYS)") << name;
  }
}

void expect_all_allowed(Role role) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: the unjailed probes (mount, capset) succeed only as root";
  ScopedEnv env({{sandbox::kProbeEnv, "all"}});
  Child c = start(role, false);
  ASSERT_GT(c.pid, 0) << c.error.message;
  std::string err = c.finish();
  auto results = probe_results(err, role);
  for (const auto& [name, result] : results) std::printf("  %s %s: %s\n", sandbox::role_name(role), name.c_str(), result.c_str());
  for (const auto& name : sandbox::probe_names()) {
    EXPECT_EQ(results[name], "allowed") << sandbox::role_name(role) << " " << name << "; stderr:\n" << err;
  }
}

// Without the seccomp filter, the other layers still stop what they can: the empty root, the
// dropped capabilities and the pid namespace. (A socket or a ptrace of one's own child is not
// theirs to stop: seccomp is.)
TEST(Sandbox, EachLayerHoldsWithoutSeccomp) {
  for (Role role : sandbox::all_roles()) {
    ScopedEnv env({{sandbox::kProbeEnv, "all,layers"}});
    Child c = start(role, true);
    ASSERT_GT(c.pid, 0) << c.error.message;
    std::string err = c.finish();
    std::string who = std::string(sandbox::role_name(role)) + "-without-seccomp ";
    std::map<std::string, std::string> results;
    std::istringstream in(err);
    std::string line;
    while (std::getline(in, line)) {
      std::string prefix = sandbox::kProbePrefix + who;
      if (line.rfind(prefix, 0) != 0) continue;
      std::string rest = line.substr(prefix.size());
      results[rest.substr(0, rest.find(' '))] = rest.substr(rest.find(' ') + 1);
      std::printf("  %s%s\n", who.c_str(), rest.c_str());
    }
    EXPECT_EQ(results["open-host-file"], "blocked (ENOENT)") << err;    // the empty root
    EXPECT_EQ(results["execve"], "blocked (ENOENT)") << err;            // nothing to run
    EXPECT_EQ(results["mount"], "blocked (EPERM)") << err;              // no CAP_SYS_ADMIN
    EXPECT_EQ(results["raise-capability"], "blocked (EPERM)") << err;   // empty permitted set
    EXPECT_EQ(results["see-host-pids"], "blocked (ESRCH)") << err;      // alone in its pid ns
  }
}

TEST(Sandbox, BlkWorkerProbesAreAllBlocked) { expect_all_blocked(Role("blk")); }
TEST(Sandbox, VcpuProcessProbesAreAllBlocked) { expect_all_blocked(Role("vcpu")); }
TEST(Sandbox, BlkWorkerProbesAllSucceedWithoutTheSandbox) { expect_all_allowed(Role("blk")); }
TEST(Sandbox, VsockWorkerProbesAreAllBlocked) { expect_all_blocked(Role("vsock")); }
TEST(Sandbox, VsockWorkerProbesAllSucceedWithoutTheSandbox) { expect_all_allowed(Role("vsock")); }
TEST(Sandbox, VcpuProcessProbesAllSucceedWithoutTheSandbox) { expect_all_allowed(Role("vcpu")); }

// moss-blk's io_uring is its one way around its seccomp policy (a ring's operations are no
// system calls). From inside the jailed worker, on the ring it serves the guest with: a vsock
// socket (which no network namespace confines) and an open are refused by the ring's
// restrictions, and a new ring is refused by the policy. Under --no-sandbox the ring is just
// as restricted: that is the ring's doing, not the jail's.
TEST(Sandbox, BlkWorkersRingRefusesSocketsAndOpensFromInsideItsJail) {
  for (bool jailed : {true, false}) {
    ScopedEnv env({{sandbox::kProbeEnv, "blk"}});
    Child c = start(Role("blk"), jailed);
    ASSERT_GT(c.pid, 0) << c.error.message;
    int status = 0;
    std::string err = c.finish(&status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe_wait_status(status) << "\n" << err;
    auto results = probe_results(err, Role("blk"));
    for (const auto& [name, result] : results) std::printf("  %s blk %s: %s\n", jailed ? "jailed" : "unjailed", name.c_str(), result.c_str());
    EXPECT_EQ(results["ring-socket"], "blocked (EACCES)") << (jailed ? "jailed" : "unjailed") << "\n" << err;
    EXPECT_EQ(results["ring-openat"], "blocked (EACCES)") << (jailed ? "jailed" : "unjailed") << "\n" << err;
    if (jailed) {
      EXPECT_EQ(results["io-uring-setup"], "blocked (killed by SIGSYS)") << err;
    }
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string status_field(const std::string& status, const std::string& field) {
  size_t p = status.find("\n" + field + ":");
  if (p == std::string::npos) return "";
  size_t b = status.find_first_not_of(" \t", p + field.size() + 2);
  return status.substr(b, status.find('\n', b) - b);
}

TEST(Sandbox, JailedWorkerSeenFromOutside) {
  ScopedEnv env({});
  Child c = start(Role("blk"), true);
  ASSERT_GT(c.pid, 0) << c.error.message;
  std::string proc = "/proc/" + std::to_string(c.pid);
  std::string status = read_text(proc + "/status");
  EXPECT_EQ(status_field(status, "Seccomp"), "2") << status;  // SECCOMP_MODE_FILTER
  EXPECT_EQ(status_field(status, "NoNewPrivs"), "1");
  for (const char* caps : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(status_field(status, caps), "0000000000000000") << caps;
  }
  // Its own pid namespace, where it is init.
  EXPECT_EQ(status_field(status, "NSpid"), std::to_string(c.pid) + "\t1");
  for (const char* ns : {"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}) {
    auto mine = std::filesystem::read_symlink(std::string("/proc/self/ns/") + ns);
    auto its = std::filesystem::read_symlink(proc + "/ns/" + ns);
    EXPECT_NE(mine, its) << ns;
  }
  // Root maps to our uid and gid, and nothing else does.
  std::istringstream uid_map(read_text(proc + "/uid_map"));
  uint64_t inside = 9, outside = 9, count = 9;
  uid_map >> inside >> outside >> count;
  EXPECT_EQ(inside, 0u);
  EXPECT_EQ(outside, geteuid());
  EXPECT_EQ(count, 1u);
  // Its root is an empty directory.
  if (geteuid() == 0) {
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(proc + "/root")) {
      (void)e;
      entries++;
    }
    EXPECT_EQ(entries, 0u);
  }
  // Its limits are the role's.
  std::string limits = read_text(proc + "/limits");
  auto expect = device::blk::limits(1, 1 << 20);
  EXPECT_NE(limits.find("Max open files            " + std::to_string(expect.nofile)), std::string::npos) << limits;
  EXPECT_NE(limits.find("Max core file size        0"), std::string::npos) << limits;
  // Its fds: stdio, the socket, the disk, and what it made itself (io_uring, eventfds, epoll,
  // libevent's pipe); nothing of ours, and the report pipe is closed.
  for (const auto& e : std::filesystem::directory_iterator(proc + "/fd")) {
    std::string target = std::filesystem::read_symlink(e.path()).string();
    int fd = std::stoi(e.path().filename().string());
    if (fd == 4) {
      EXPECT_NE(target.find("memfd:moss-jail-test-disk"), std::string::npos) << target;
    }
    if (fd > 4) {
      EXPECT_TRUE(target.rfind("anon_inode:", 0) == 0 || target.rfind("pipe:", 0) == 0) << fd << " -> " << target;
    }
  }
  int st = 0;
  c.finish(&st);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe_wait_status(st);
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  EXPECT_FALSE(ec) << dir << ": " << ec.message();
  std::sort(out.begin(), out.end());
  return out;
}

// sandbox::enter's keep_dirs, through moss-vsock, which keeps the directory of its --uds-path:
// seen through /proc/PID/root (that is, through the worker's own mounts), that directory is
// there, readable and writable, nothing else of the host is, and the root around it is still
// read-only. (From inside, the worker's seccomp filter allows no open; the harness test
// vsock_jail_test shows it connecting to sockets there.)
TEST(Sandbox, VsockWorkerKeepsItsSocketDirectoryAndNothingElse) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: looking into the root of another user namespace takes root";
  ScopedEnv env({});
  ScopedDir outside = ScopedDir::make();
  std::ofstream(outside.path + "/outside.txt") << "not for the worker";
  Child c = start(Role("vsock"), true);
  ASSERT_GT(c.pid, 0) << c.error.message;
  const std::string root = "/proc/" + std::to_string(c.pid) + "/root", kept = c.dir.path;
  std::ofstream(kept + "/inside.txt") << "for the worker";

  // Inside the kept directory: its socket, and our file, readable...
  struct stat st;
  ASSERT_EQ(stat((root + kept + "/vsock.sock").c_str(), &st), 0) << strerror(errno);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(read_text(root + kept + "/inside.txt"), "for the worker");
  // ...and writable: what is written there lands in the host's directory.
  {
    std::ofstream out(root + kept + "/written.txt");
    out << "from inside";
    EXPECT_TRUE(out.good());
  }
  EXPECT_EQ(read_text(kept + "/written.txt"), "from inside");
  // Outside it, nothing of the host.
  for (const std::string& p : {outside.path + "/outside.txt", outside.path, std::string("/etc/passwd"), std::string("/usr")}) {
    errno = 0;
    EXPECT_NE(access((root + p).c_str(), F_OK), 0) << p;
    EXPECT_EQ(errno, ENOENT) << p;
  }
  // The root holds only the way to the kept directory.
  std::string tail = kept.substr(std::string("/tmp/").size());
  EXPECT_EQ(entries(root), std::vector<std::string>{"tmp"});
  EXPECT_EQ(entries(root + "/tmp"), std::vector<std::string>{tail});
  // And it is read-only around it.
  for (const char* p : {"/new-file", "/tmp/new-file"}) {
    errno = 0;
    int fd = open((root + p).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    EXPECT_LT(fd, 0) << p;
    EXPECT_EQ(errno, EROFS) << p;
    if (fd >= 0) close(fd);
  }
  errno = 0;
  EXPECT_NE(mkdir((root + "/tmp/new-dir").c_str(), 0700), 0);
  EXPECT_EQ(errno, EROFS);
  // Its mounts, as it sees them: the read-only root and the kept directory, writable but
  // nosuid, nodev and noexec.
  std::map<std::string, std::string> mounts;  // mount point -> per-mount options
  std::istringstream info(read_text("/proc/" + std::to_string(c.pid) + "/mountinfo"));
  std::string line;
  while (std::getline(info, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, at_root, point, options;
    f >> id >> parent >> dev >> at_root >> point >> options;
    mounts[point] = options;
    std::printf("  vsock mount %s %s\n", point.c_str(), options.c_str());
  }
  ASSERT_EQ(mounts.size(), 2u) << read_text("/proc/" + std::to_string(c.pid) + "/mountinfo");
  auto has = [](const std::string& options, const std::string& flag) {
    return ("," + options + ",").find("," + flag + ",") != std::string::npos;
  };
  for (const char* flag : {"ro", "nosuid", "nodev", "noexec"}) EXPECT_TRUE(has(mounts["/"], flag)) << mounts["/"];
  for (const char* flag : {"rw", "nosuid", "nodev", "noexec"}) EXPECT_TRUE(has(mounts[kept], flag)) << mounts[kept];

  int status = 0;
  std::string err = c.finish(&status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe_wait_status(status) << "\n" << err;
  // Jailed, the worker may not unlink: its socket is left for whoever started it to remove.
  EXPECT_TRUE(std::filesystem::exists(kept + "/vsock.sock"));
}

TEST(Sandbox, ForbiddenSyscallKillsTheWorkerWithSigsys) {
  for (Role role : sandbox::all_roles()) {
    ScopedEnv env({{sandbox::kForbiddenEnv, sandbox::role_name(role)}});
    Child c = start(role, true);
    ASSERT_GT(c.pid, 0) << c.error.message;
    int status = 0;
    std::string err = c.finish(&status);
    EXPECT_EQ(describe_wait_status(status), "was killed by signal 31 (SIGSYS)") << sandbox::role_name(role) << "\n" << err;
  }
}

// The user's environment may hold secrets; a child (where a guest that breaks a parser ends
// up) gets only the variables moss names, and its own launch line.
TEST(Launcher, ChildEnvironmentKeepsOnlyTheNamedVariables) {
  std::vector<std::string> in = {"SECRET_TOKEN=hunter2", "HOME=/root", "PATH=/usr/bin", "LD_PRELOAD=/tmp/x.so",
                                 "MOSS_LOG=debug", "MOSS_LOGX=1", "MOSS_TEST_PROBE=blk", "MOSS_SANDBOX=vcpu:jail:9",
                                 "MOSS_RUNTIME_DIR=/run/x", "no-equals-sign", "MOSS_LOG"};
  std::vector<char*> env;
  for (auto& v : in) env.push_back(v.data());
  env.push_back(nullptr);
  auto out = child_environment(env.data(), sandbox::Launch{Role("blk"), true, 5});
  std::vector<std::string> want = {"MOSS_LOG=debug", "MOSS_TEST_PROBE=blk"};
  auto names = child_environment_names();
  if (std::find(names.begin(), names.end(), "ASAN_OPTIONS") != names.end()) {
    want.push_back("ASAN_OPTIONS=detect_leaks=0");  // A sanitizer build: a jailed child cannot run the leak check.
  }
  want.push_back("MOSS_SANDBOX=blk:jail:5");
  EXPECT_EQ(out, want);
  for (auto name : child_environment_names()) {
    EXPECT_TRUE(name.rfind("MOSS_", 0) == 0 || name.find("SAN_OPTIONS") != std::string_view::npos) << name;
  }
}

// The same, seen from outside in /proc/PID/environ of each real child, jailed and not: a
// SECRET_TOKEN in the broker's environment reaches none of them.
TEST(Sandbox, ChildrenSeeNoneOfTheBrokersOtherEnvironment) {
  for (bool jailed : {true, false}) {
    for (Role role : sandbox::all_roles()) {
      ScopedEnv env({{"SECRET_TOKEN", "moss-jail-test-secret"}, {"MOSS_LOG", "warn"}, {"MOSS_LOGGED", "no"}});
      Child c = start(role, jailed);
      ASSERT_GT(c.pid, 0) << c.error.message;
      std::string environ_text = read_text("/proc/" + std::to_string(c.pid) + "/environ");
      std::string who = std::string(sandbox::role_name(role)) + (jailed ? " jailed" : " unjailed");
      EXPECT_EQ(environ_text.find("moss-jail-test-secret"), std::string::npos) << who;
      std::vector<std::string> vars;
      for (size_t at = 0; at < environ_text.size();) {
        size_t end = environ_text.find('\0', at);
        if (end == std::string::npos) end = environ_text.size();
        vars.push_back(environ_text.substr(at, end - at));
        at = end + 1;
      }
      auto names = child_environment_names();
      bool log_seen = false;
      for (const auto& v : vars) {
        std::string name = v.substr(0, v.find('='));
        bool allowed = name == sandbox::kEnv || std::find(names.begin(), names.end(), name) != names.end();
        EXPECT_TRUE(allowed) << who << " has " << v;
        log_seen = log_seen || v == "MOSS_LOG=warn";
      }
      EXPECT_TRUE(log_seen) << who << ": MOSS_LOG did not reach it";
      c.finish();
    }
  }
}

// Starts each role jailed with MOSS_SECCOMP_TRAP=1 and its forbidden-call hook; `check` gets the
// role, how the child ended and its stderr.
void for_each_role_trapping_its_forbidden_call(
    const std::function<void(Role, const std::string& how, const std::string& err)>& check) {
  for (Role role : sandbox::all_roles()) {
    ScopedEnv env({{sandbox::kSeccompTrapEnv, "1"}, {sandbox::kForbiddenEnv, sandbox::role_name(role)}});
    Child c = start(role, true);
    ASSERT_GT(c.pid, 0) << c.error.message;
    int status = 0;
    std::string err = c.finish(&status);
    check(role, describe_wait_status(status), err);
  }
}

// MOSS_SECCOMP_TRAP=1 turns the kill into a catchable trap, which a compromised child could
// use to survive its denied calls. Production (Release) binaries ignore it: a forbidden call
// still kills each role with SIGSYS.
TEST(Sandbox, SeccompTrapIsIgnoredByReleaseBuilds) {
  if (sandbox::seccomp_trap_available()) {
    GTEST_SKIP() << "SKIP: this is a build with MOSS_SECCOMP_TRAP_HOOK (Debug), which honours MOSS_SECCOMP_TRAP; "
                    "the Release build runs this test";
  }
  for_each_role_trapping_its_forbidden_call([](Role role, const std::string& how, const std::string& err) {
    EXPECT_EQ(how, "was killed by signal 31 (SIGSYS)") << sandbox::role_name(role) << "\n" << err;
    EXPECT_EQ(err.find("moss: seccomp:"), std::string::npos) << err;
  });
}

// In a Debug build (the sanitizer build CI tests with) the trap names the denied call.
TEST(Sandbox, SeccompTrapNamesTheCallInDebugBuilds) {
  if (!sandbox::seccomp_trap_available()) {
    GTEST_SKIP() << "SKIP: MOSS_SECCOMP_TRAP is compiled only into Debug builds (MOSS_SECCOMP_TRAP_HOOK); the "
                    "sanitizer build of .ci/setup test runs this test";
  }
  for_each_role_trapping_its_forbidden_call([](Role role, const std::string& how, const std::string& err) {
    EXPECT_EQ(how, "exited with status 159") << sandbox::role_name(role) << "\n" << err;
    EXPECT_NE(err.find("moss: seccomp: system call " + std::to_string(SYS_syslog) + " is not allowed by this role's policy"),
              std::string::npos)
        << err;
  });
}

TEST(Launcher, ChildThatNeverEntersItsSandboxIsRefused) {
  ChildSpec spec;
  spec.path = "/bin/true";
  spec.argv = {"true"};
  spec.sandbox = jail::worker(Role("blk"), device::blk::limits(1, 0), true);
  auto pid = spawn_child(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.error().message, "the blk process (/bin/true) exited with status 0 before it entered its sandbox");

  spec.path = "/bin/sleep";
  spec.argv = {"sleep", "10"};
  spec.enter_timeout_ms = 300;
  pid = spawn_child(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.error().message,
            "the blk process (/bin/sleep) did not enter its sandbox within 0.3 s (its main() must call "
            "moss::sandbox::enter first)");
}

TEST(Launcher, MissingProgramIsOneSentence) {
  ChildSpec spec;
  spec.path = "/nonexistent/moss-blk";
  spec.argv = {"moss-blk"};
  spec.sandbox = jail::worker(Role("blk"), device::blk::limits(1, 0), true);
  auto pid = spawn_child(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.error().message,
            "the blk process (/nonexistent/moss-blk) could not be started: cannot execute the program: No such file "
            "or directory");
}

TEST(Launcher, WrongRoleIsRefusedByTheChild) {
  ChildSpec spec;
  // moss-vcpu, which enters its sandbox first thing, told it is a blk worker.
  spec.path = build_dir() + "/moss-vcpu";
  spec.argv = {"moss-vcpu", "--help"};
  spec.sandbox = jail::worker(Role("blk"), device::blk::limits(1, 1 << 20), true);
  int err[2];
  ASSERT_EQ(pipe2(err, O_CLOEXEC), 0);
  UniqueFd r(err[0]), w(err[1]);
  spec.stderr_fd = w.get();
  auto pid = spawn_child(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_NE(pid.error().message.find("could not enter its sandbox: the launcher asked for the blk role, but this is "
                                     "moss-vcpu"),
            std::string::npos)
      << pid.error().message;
}

// The same jail for a broker that is not root: only its own uid and gid are mapped.
TEST(Sandbox, WorksForAnUnprivilegedBroker) {
  if (geteuid() != 0) {
    expect_all_blocked(Role("blk"));
    return;
  }
  // As root, become nobody in a child and run the blocked-probes check there.
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    std::string report;
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
      report = "cannot become nobody";
    } else {
      prctl(PR_SET_DUMPABLE, 1);  // Changing uid made us undumpable: /proc/self would be root's.
      ScopedEnv env({{sandbox::kProbeEnv, "blk"}});
      if (access((build_dir() + "/moss-blk").c_str(), X_OK) != 0) {
        report = "SKIP: nobody cannot run " + build_dir() + "/moss-blk (a build tree under a private directory)";
        (void)!write(pipefd[1], report.data(), report.size());
        _exit(0);
      }
      Child c = start(Role("blk"), true);
      if (c.pid <= 0) {
        report = "spawn failed: " + c.error.message;
      } else {
        auto results = probe_results(c.finish(), Role("blk"));
        for (const auto& name : sandbox::probe_names()) {
          if (results[name].rfind("blocked (", 0) != 0) report += name + ": '" + results[name] + "' ";
        }
      }
    }
    (void)!write(pipefd[1], report.data(), report.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string report;
  char buf[1024];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  waitpid(pid, nullptr, 0);
  if (report.rfind("SKIP", 0) == 0) GTEST_SKIP() << report;
  EXPECT_EQ(report, "");
}

}  // namespace
}  // namespace moss
