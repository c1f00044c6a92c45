// The policies moss ships: each parses and compiles, each kills a process that makes a call it
// does not allow, and moss-policy prints them.
#include "policies/builtin.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "policies/sandbox.h"
#include "policies/seccomp_filter.h"

namespace moss::policy {
namespace {

using sandbox::Role;

// Runs `body` in a child with `role`'s filter loaded; returns its wait status.
int run_filtered(Role role, const std::function<int()>& body) {
  auto p = builtin(role);
  EXPECT_TRUE(p.ok()) << p.error().message;
  auto f = Filter::compile(*p);
  EXPECT_TRUE(f.ok()) << f.error().message;
  pid_t pid = fork();
  if (pid == 0) {
    if (!f->load()) _exit(100);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

bool killed_by_sigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }

// The roles are the policy files no other includes: a device's role comes with its file.
TEST(BuiltinPolicies, TheRolesAreThePoliciesNothingIncludes) {
  std::vector<std::string> names;
  for (Role r : sandbox::all_roles()) names.emplace_back(r.name());
  EXPECT_EQ(names, (std::vector<std::string>{"blk", "null", "vcpu", "vsock"}));
  EXPECT_FALSE(sandbox::role_from_name("common").has_value());
  EXPECT_FALSE(sandbox::role_from_name("vhost-user").has_value());
  EXPECT_FALSE(sandbox::role_from_name("net").has_value());
  ASSERT_TRUE(sandbox::role_from_name("null").has_value());
  EXPECT_EQ(*sandbox::role_from_name("null"), Role("null"));
  EXPECT_FALSE(Role("blk") == Role("vsock"));
}

TEST(BuiltinPolicies, EveryRoleParsesAndCompiles) {
  for (Role r : sandbox::all_roles()) {
    auto p = builtin(r);
    ASSERT_TRUE(p.ok()) << sandbox::role_name(r) << ": " << p.error().message;
    EXPECT_GT(p->rules.size(), 40u) << sandbox::role_name(r);
    auto f = Filter::compile(*p);
    ASSERT_TRUE(f.ok()) << sandbox::role_name(r) << ": " << f.error().message;
    auto pfc = f->pfc();
    ASSERT_TRUE(pfc.ok());
    EXPECT_NE(pfc->find("action KILL_PROCESS"), std::string::npos) << *pfc;
  }
}

TEST(BuiltinPolicies, EveryFileIsUsedByARole) {
  for (const auto& name : builtin_names()) {
    bool used = false;
    for (Role r : sandbox::all_roles()) {
      auto p = builtin(r);
      ASSERT_TRUE(p.ok());
      for (const auto& rule : p->rules) used = used || rule.where.rfind(name + ".policy:", 0) == 0;
    }
    EXPECT_TRUE(used) << name << ".policy is built in but no role includes it";
  }
}

TEST(BuiltinPolicies, AllowedCallsWork) {
  for (Role r : sandbox::all_roles()) {
    int status = run_filtered(r, [] {
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) != 0) return 1;
      if (write(fds[1], "x", 1) != 1) return 2;
      char c;
      if (read(fds[0], &c, 1) != 1) return 3;
      void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return 4;
      munmap(p, 4096);
      // An open gets an error, not death: nothing to open in the sandbox anyway.
      if (open("/etc/passwd", O_RDONLY) != -1 || errno != EACCES) return 5;
      return 0;
    });
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << sandbox::role_name(r) << " status " << status;
  }
}

TEST(BuiltinPolicies, ForbiddenCallsKillWithSigsys) {
  struct Case {
    const char* what;
    std::function<int()> body;
  };
  std::vector<Case> cases = {
      {"execve", [] { execl("/bin/true", "true", nullptr); return 0; }},
      {"socket(AF_INET)", [] { return socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 0 : 1; }},
      {"socket(AF_UNIX)", [] { return socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 1; }},
      {"ptrace", [] { return static_cast<int>(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0)); }},
      {"mount", [] { return static_cast<int>(syscall(SYS_mount, "x", "/", "tmpfs", 0, nullptr)); }},
      {"fork", [] { return static_cast<int>(syscall(SYS_fork)); }},
      {"unshare", [] { return static_cast<int>(syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */)); }},
      {"kill", [] { return kill(1, 0); }},
      {"executable mmap", [] {
         void* p = mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         return p == MAP_FAILED ? 1 : 0;
       }},
      {"mprotect to executable", [] {
         void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         return mprotect(p, 4096, PROT_READ | PROT_EXEC);
       }},
      {"an ioctl no role uses (TIOCSTI)", [] { return ioctl(0, 0x5412, "x"); }},
      {"fcntl(F_SETLK)", [] { return fcntl(0, F_SETLK, nullptr); }},
  };
  for (Role r : sandbox::all_roles()) {
    for (const auto& c : cases) {
      int status = run_filtered(r, c.body);
      EXPECT_TRUE(killed_by_sigsys(status)) << sandbox::role_name(r) << ": " << c.what << " gave status " << status;
    }
  }
}

TEST(BuiltinPolicies, VcpuMayStartThreadsButNotProcesses) {
  // clone with thread flags is allowed, a fork-style clone is not; clone3 fails with ENOSYS so
  // glibc falls back to clone.
  int status = run_filtered(Role("vcpu"), [] {
    long r = syscall(SYS_clone3, nullptr, 0);
    return r == -1 && errno == ENOSYS ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  status = run_filtered(Role("vcpu"), [] { return static_cast<int>(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)); });
  EXPECT_TRUE(killed_by_sigsys(status)) << status;
}

TEST(BuiltinPolicies, VcpuMayUseKvmRunButBlkMayNot) {
  // KVM_RUN on a non-KVM fd fails with ENOTTY when allowed, and kills when not.
  auto kvm_run = [] { return ioctl(0, 0xae80, 0) == -1 && errno == ENOTTY ? 0 : 1; };
  int status = run_filtered(Role("vcpu"), kvm_run);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("blk"), kvm_run)));
}

// The vcpu process's second filter: after forbid_ioctls, the set-up ioctls kill on any fd while
// the others keep working; and that one form of seccomp() is all any role may call.
TEST(BuiltinPolicies, VcpuMayStackTheSetUpLockAndNothingElseMayCallSeccomp) {
  int status = run_filtered(Role("vcpu"), [] {
    const uint64_t forbidden[] = {0xae01 /* KVM_CREATE_VM */, 0xae41 /* KVM_CREATE_VCPU */};
    if (!forbid_ioctls(forbidden)) return 2;
    // KVM_RUN is still allowed (ENOTTY on stdin); KVM_CREATE_VCPU now kills.
    if (!(ioctl(0, 0xae80, 0) == -1 && errno == ENOTTY)) return 3;
    ioctl(0, 0xae41, 0);
    return 4;
  });
  EXPECT_TRUE(killed_by_sigsys(status)) << status;
  // Any other seccomp() call, in the vcpu role or another, kills.
  auto strict = [] { return static_cast<int>(syscall(SYS_seccomp, 0 /* SECCOMP_SET_MODE_STRICT */, 0, nullptr)); };
  EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("vcpu"), strict)));
  auto lock = [] {
    const uint64_t forbidden[] = {0xae01};
    return forbid_ioctls(forbidden) ? 0 : 1;
  };
  EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("blk"), lock)));
  EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("vsock"), lock)));
}

// A ring's operations are no system calls, so a new io_uring would reach what a policy
// forbids: no role may make one. moss-blk uses the ring it made, restricted, before its filter
// loaded (devices/blk/engine.h): it may enter it, but neither make another nor register
// anything on it.
TEST(BuiltinPolicies, NoRoleMayMakeAnIoUringAndBlkMayOnlyEnterItsOwn) {
  auto setup = [] {
    unsigned char params[120] = {};  // struct io_uring_params
    return static_cast<int>(syscall(SYS_io_uring_setup, 4, params));
  };
  for (Role r : sandbox::all_roles()) {
    EXPECT_TRUE(killed_by_sigsys(run_filtered(r, setup))) << sandbox::role_name(r) << ": io_uring_setup";
    EXPECT_TRUE(killed_by_sigsys(run_filtered(r, [] {
      return static_cast<int>(syscall(SYS_io_uring_register, 0, 0 /* IORING_REGISTER_BUFFERS */, nullptr, 0));
    }))) << sandbox::role_name(r) << ": io_uring_register";
  }
  // io_uring_enter on an fd that is no ring: allowed, so EBADF or EOPNOTSUPP rather than death.
  int status = run_filtered(Role("blk"), [] {
    long r = syscall(SYS_io_uring_enter, 0, 0, 0, 0, nullptr, 0);
    return r == -1 && (errno == EOPNOTSUPP || errno == EBADF) ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  for (Role r : {Role("vcpu"), Role("vsock")}) {
    EXPECT_TRUE(killed_by_sigsys(run_filtered(r, [] { return static_cast<int>(syscall(SYS_io_uring_enter, 0, 0, 0, 0, nullptr, 0)); })))
        << sandbox::role_name(r) << ": io_uring_enter";
  }
}

TEST(BuiltinPolicies, VsockMayConnectUnixStreamSocketsAndNothingElse) {
  // The socket moss-vsock makes for a guest connection, and its connect (to a path that is
  // not there: allowed, so it fails with ENOENT).
  int status = run_filtered(Role("vsock"), [] {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return 1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, "/nonexistent/moss-vsock-policy-test_5000");
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != -1 || errno != ENOENT) return 2;
    // accept4 on a socket that does not listen: allowed, so EINVAL.
    if (accept4(s, nullptr, nullptr, SOCK_CLOEXEC) != -1 || errno != EINVAL) return 3;
    return 0;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  constexpr int kFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;
  struct Case {
    const char* what;
    std::function<int()> body;
  };
  std::vector<Case> killed = {
      {"socket(AF_INET)", [] { return socket(AF_INET, SOCK_STREAM | kFlags, 0); }},
      {"socket(AF_INET6)", [] { return socket(AF_INET6, SOCK_STREAM | kFlags, 0); }},
      {"socket(AF_NETLINK)", [] { return socket(AF_NETLINK, SOCK_DGRAM | kFlags, 0); }},
      {"socket(AF_VSOCK)", [] { return socket(AF_VSOCK, SOCK_STREAM | kFlags, 0); }},
      {"socket(AF_UNIX, SOCK_DGRAM)", [] { return socket(AF_UNIX, SOCK_DGRAM | kFlags, 0); }},
      {"socket(AF_UNIX, SOCK_SEQPACKET)", [] { return socket(AF_UNIX, SOCK_SEQPACKET | kFlags, 0); }},
      {"a blocking socket(AF_UNIX)", [] { return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); }},
      {"socketpair", [] {
         int sv[2];
         return socketpair(AF_UNIX, SOCK_STREAM | kFlags, 0, sv);
       }},
      {"bind", [] {
         sockaddr_un addr{};
         addr.sun_family = AF_UNIX;
         return bind(0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
       }},
      {"listen", [] { return listen(0, 1); }},
      {"unlink", [] { return unlink("/nonexistent/moss-vsock-policy-test"); }},
      {"clone (a thread)", [] {
         return static_cast<int>(syscall(SYS_clone, CLONE_VM | CLONE_THREAD | CLONE_SIGHAND, 0, 0, 0, 0));
       }},
  };
  for (const auto& c : killed) {
    EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("vsock"), c.body))) << "vsock: " << c.what;
  }
  // The other roles may not connect; the vcpu process may not accept either. A standalone
  // moss-blk accepts its next frontend on the listener it made before its filter loaded
  // (allowed: on fd 0, not a socket, ENOTSOCK).
  for (Role r : {Role("vcpu"), Role("blk")}) {
    EXPECT_TRUE(killed_by_sigsys(run_filtered(r, [] { return connect(0, nullptr, 0); }))) << sandbox::role_name(r);
  }
  EXPECT_TRUE(killed_by_sigsys(run_filtered(Role("vcpu"), [] { return accept4(0, nullptr, nullptr, 0); })));
  status = run_filtered(Role("blk"), [] { return accept4(0, nullptr, nullptr, 0) == -1 && errno == ENOTSOCK ? 0 : 1; });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

std::string run_tool(const std::string& args) {
  std::string out;
  FILE* f = popen((std::string(MOSS_POLICY_TOOL) + " " + args + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int status = pclose(f);
  return out + "\nstatus " + std::to_string(WEXITSTATUS(status));
}

TEST(MossPolicyTool, PrintsTheFlattenedPolicyOfARole) {
  std::string out = run_tool("vcpu");
  EXPECT_NE(out.find("# moss-policy vcpu: the seccomp policy moss-vcpu loads"), std::string::npos) << out;
  EXPECT_NE(out.find("\nread "), std::string::npos) << out;  // From common.policy.
  EXPECT_NE(out.find("common.policy:"), std::string::npos) << out;
  EXPECT_NE(out.find("KVM_RUN=0xae80"), std::string::npos) << out;
  EXPECT_NE(out.find("mmap: arg2 & 0x4 == 0"), std::string::npos) << out;
  EXPECT_NE(out.find("status 0"), std::string::npos) << out;
}

TEST(MossPolicyTool, PrintsTheBpfProgram) {
  std::string out = run_tool("--bpf blk");
  EXPECT_NE(out.find("if ($syscall == 426)"), std::string::npos) << out;  // io_uring_enter
  EXPECT_EQ(out.find("if ($syscall == 425)"), std::string::npos) << out;  // io_uring_setup: not allowed
  EXPECT_NE(out.find("action KILL_PROCESS"), std::string::npos) << out;
  EXPECT_NE(out.find("status 0"), std::string::npos) << out;
}

TEST(MossPolicyTool, RefusesAnUnknownRoleWithOneSentence) {
  EXPECT_EQ(run_tool("net"), "moss-policy: 'net' is not a role (the roles are: blk, null, vcpu, vsock)\n\nstatus 1");
}

TEST(SandboxLaunch, TheEnvironmentValueRoundTrips) {
  sandbox::Launch l{Role("blk"), false, 7};
  auto back = sandbox::parse_launch(sandbox::format_launch(l));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->role, Role("blk"));
  EXPECT_FALSE(back->jailed);
  EXPECT_EQ(back->report_fd, 7);
  EXPECT_EQ(sandbox::format_launch({Role("vcpu"), true, 9}), "vcpu:jail:9");
  for (const char* bad : {"", "vcpu", "vcpu:jail", "vcpu:jail:", "vcpu:jail:x", "net:jail:5", "vcpu:maybe:5",
                          "vcpu:jail:2", "vcpu:jail:5x"}) {
    EXPECT_FALSE(sandbox::parse_launch(bad).has_value()) << bad;
  }
}

// enter()'s keep_dirs are checked before anything is mounted: each bad one is the one sentence
// the launcher gets, and the child exits 1. (That a good one works is jail_test's
// Sandbox.VsockWorkerKeepsItsSocketDirectoryAndNothingElse, in a real jail.)
TEST(SandboxKeepDirs, EachBadDirectoryIsOneSentence) {
  struct Case {
    std::string dir, error;
  };
  const std::vector<Case> cases = {
      {"relative/dir", "it cannot keep the directory 'relative/dir': it is not an absolute path"},
      {"", "it cannot keep the directory '': it is not an absolute path"},
      {"/", "it cannot keep the directory '/': that is the whole host tree"},
      {"//", "it cannot keep the directory '//': that is the whole host tree"},
      {"/tmp/../etc", "it cannot keep the directory '/tmp/../etc': it has a '..' component (give the path without them)"},
      {"/tmp/./x", "it cannot keep the directory '/tmp/./x': it has a '.' component (give the path without them)"},
      {"/proc/self", "it cannot keep the directory '/proc/self': the sandbox's own root is mounted over /proc while it is built"},
      {"/etc/passwd", "it cannot keep the directory '/etc/passwd': it is not a directory"},
      {"/nonexistent-moss-keep-dir", "it cannot keep the directory '/nonexistent-moss-keep-dir': No such file or directory"},
  };
  for (const auto& c : cases) {
    int report[2], err[2];
    ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(err, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
      // In a mount namespace of its own, so that even a check that wrongly passed could not
      // touch the host's mounts (as root; unprivileged, mounting fails anyway).
      if (unshare(CLONE_NEWNS) != 0) (void)!unshare(CLONE_NEWUSER | CLONE_NEWNS);
      dup2(err[1], 2);
      setenv(sandbox::kEnv, sandbox::format_launch({Role("vsock"), true, report[1]}).c_str(), 1);
      sandbox::enter(Role("vsock"), {c.dir});
      _exit(42);  // enter() returned: the directory was accepted.
    }
    close(report[1]);
    close(err[1]);
    auto slurp = [](int fd) {
      std::string out;
      char buf[512];
      ssize_t n;
      while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
      close(fd);
      return out;
    };
    std::string reported = slurp(report[0]), printed = slurp(err[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << c.dir << ": status " << status;
    EXPECT_EQ(reported, "error " + c.error + "\n") << c.dir;
    EXPECT_EQ(printed, "moss-vsock: cannot enter the sandbox: " + c.error + "\n") << c.dir;
  }
}

}  // namespace
}  // namespace moss::policy
