// The child half of a moss child process's sandbox.
//
// The broker's launcher (broker/launcher.h) starts every child (the vcpu process, each device
// worker) in new user, mount, pid, ipc, uts, cgroup and network namespaces, with per-role
// rlimits, no_new_privs, PR_SET_PDEATHSIG and only the fds it needs, and says so in the
// environment (kEnv). It cannot do the rest before exec: the new root has no libraries to
// load the program from, and a seccomp filter loaded before exec would have to allow execve.
// So each role's main() calls enter() before it reads one byte from a peer: first thing, or
// once it has made what its policy will not let it make later (moss-vsock its listening
// sockets, moss-blk its restricted io_uring):
//
//   1. pivot_root into an empty tmpfs, remounted read-only; the host's tree is detached (but
//      for the directories the role asked to keep, bind-mounted at the same path);
//   2. every capability dropped (libcap-ng: effective, permitted, inheritable, ambient and the
//      bounding set), securebits locked so none comes back;
//   3. the role's seccomp policy (policies/ROLE.policy, compiled in) loaded, default action
//      kill-process;
//   4. the launcher told that the child is jailed; spawn_child() returns only after that, so a
//      role that forgets to call enter() never starts.
//
// With `moss run --no-sandbox` the launcher skips the namespaces and limits and enter() skips
// 1-3; the report says so. A program started by hand (no kEnv), e.g. moss-blk driven by QEMU
// or moss-vcpu by a test harness, runs unjailed, with no more than its starter has.
// TODO(security): jail standalone workers too (they open their disk and socket by path).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "policies/builtin.h"

namespace moss::sandbox {

// The fds a child keeps (the sandbox closes every other but 0-2), in order: the i-th passed
// becomes fd kFirst + i in the child. pass() is the only way to add one, and it returns that
// number, so an argv built from it ("--fd", n) cannot drift from where the fd lands.
class PassedFds {
 public:
  static constexpr int kFirst = 3;
  // `fd` (ours, still open when the child is spawned) becomes the returned fd in the child.
  int pass(int fd) {
    fds_.push_back(fd);
    return kFirst + static_cast<int>(fds_.size()) - 1;
  }
  std::span<const int> ours() const { return fds_; }
  size_t size() const { return fds_.size(); }
  int operator[](size_t i) const { return fds_.at(i); }  // Ours, of the fd the child has as kFirst + i.
  // The first number after the passed fds (the launcher puts its report pipe there).
  int next() const { return kFirst + static_cast<int>(fds_.size()); }

 private:
  std::vector<int> fds_;
};

// A child's resource limits: RLIMIT_* values, soft = hard (the child cannot raise them: no
// CAP_SYS_RESOURCE).
struct Limits {
  uint64_t nofile = 0;   // open fds
  uint64_t nproc = 0;    // tasks of the child's uid in its user namespace: its threads
  uint64_t fsize = 0;    // the largest file offset it may write or truncate to
  uint64_t memlock = 0;  // locked memory
};

// Set by the launcher: "ROLE:MODE:FD". MODE is "jail", or "none" for --no-sandbox; FD is the
// write end of a pipe on which enter() reports "ok" or "error SENTENCE", one line.
inline constexpr char kEnv[] = "MOSS_SANDBOX";

struct Launch {
  Role role = Role("vcpu");
  bool jailed = true;
  int report_fd = -1;
};

// Parses kEnv's value; nullopt when malformed.
std::optional<Launch> parse_launch(std::string_view value);
std::string format_launch(const Launch& launch);

// Finishes the jail for `role` and loads its policy. Returns only when the process is jailed
// (or, under --no-sandbox or when started by hand, knowingly not); on any failure it prints
// one sentence, reports it to the launcher and exits with status 1.
//
// `keep_dirs`: host directories that stay visible inside the otherwise empty root, at the same
// path, read-write but nosuid, nodev and noexec (flags the host mount has locked, such as
// read-only, stay). Each is bind-mounted recursively (mounts below it come along with their
// own flags); the directories leading to it are empty and read-only like the rest of the root.
// Each must be an absolute path of an existing directory, without "." or ".." components, and
// neither / nor under /proc; anything else fails as above. Unjailed, they are ignored (the
// whole host tree is there anyway). A role's seccomp policy still decides what it may do
// there: moss-vsock, the one role that keeps a directory, may only connect() to its sockets.
void enter(Role role, const std::vector<std::string>& keep_dirs = {});

// MOSS_SECCOMP_TRAP=1 makes a denied call raise SIGSYS, which enter() catches to name the call
// and exit with status 159, instead of the kernel killing the process. A trap can be caught,
// so this weakens the sandbox: only a build with MOSS_SECCOMP_TRAP_HOOK (CMake; Debug builds
// only, never Release) honours it, and seccomp_trap_available() says whether this one does.
inline constexpr char kSeccompTrapEnv[] = "MOSS_SECCOMP_TRAP";
bool seccomp_trap_available();

// Whether the launcher started this process to be jailed (kEnv says "jail"), i.e. whether
// enter() will pivot and filter. For what a role must prepare differently before entering
// (moss-vsock makes its --uds-path absolute, since the jail's working directory is /).
bool launched_jailed();

}  // namespace moss::sandbox
