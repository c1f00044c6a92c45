// Directories that are this user's alone: the runtime directory ($MOSS_RUNTIME_DIR,
// $XDG_RUNTIME_DIR/moss, /run/moss or /tmp/moss-UID) and what moss makes in it (the CID
// leases, a VM's vsock directory).
//
// Such a directory is opened once, checked, and from then on everything beneath it is reached
// through its fd (openat, mkdirat, unlinkat, all O_NOFOLLOW), never by its path again: a path
// in /tmp can be a symlink another user planted, or be swapped for one between a check and a
// use, and then moss's lock files and sockets would land in her directory where she can
// replace them. Unix sockets take a path, not a directory fd, so they are bound and connected
// through /proc/self/fd/N/NAME: the kernel resolves /proc/self/fd/N to the very directory the
// fd holds, whatever happens to its path meanwhile, and it needs no process-wide state (fchdir
// would move the working directory under every thread and every relative path the user gave).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss::privdir {

class Dir {
 public:
  // Opens `path` as a directory of this user's alone, first creating it (mode 0700) if it is
  // missing and `create` says so. Refused, each with one sentence naming the path and what is
  // wrong: a symbolic link (never followed, whatever it points to), anything but a directory,
  // a directory of another user, one that group or others may write to (they may have put
  // anything in it). One of ours that others may only read or search is made 0700. Missing
  // without `create`: an Error with err == ENOENT. The directories leading to it are followed
  // as usual (they are the user's environment); only the last one is moss's. `what` names it
  // in errors ("runtime directory").
  static Result<Dir> open(const std::string& path, const std::string& what, bool create);
  // The same for `name` (one path component) inside this directory, through its fd.
  Result<Dir> sub(const std::string& name, const std::string& what, bool create) const;
  Dir() = default;
  Dir(Dir&&) = default;
  Dir& operator=(Dir&&) = default;
  // Another handle on the same directory (its own fd).
  Result<Dir> dup() const;

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  // The path it was opened by: for messages and for what moss shows the user, not for access.
  const std::string& path() const { return path_; }
  std::string path_of(const std::string& name) const { return path_ + "/" + name; }
  // "/proc/self/fd/N/NAME": a path to `name` in this very directory, for bind() and connect()
  // of Unix sockets. Valid only while this Dir is open.
  std::string fd_path(const std::string& name) const;

  // openat(fd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode); errors name path_of(name).
  Result<UniqueFd> open_file(const std::string& name, int flags, mode_t mode) const;
  // Whether `name` here is the file open at `fd` (same device and inode; a symlink is not).
  bool same_file(int fd, const std::string& name) const;
  // unlinkat; false if it failed (missing included).
  bool remove(const std::string& name) const;
  // Removes the empty subdirectory `name`; false if it failed (not empty, missing).
  bool remove_dir(const std::string& name) const;
  // Names of the entries, without "." and "..".
  std::vector<std::string> entries() const;

 private:
  UniqueFd fd_;
  std::string path_;
};

// A listening Unix stream socket at `name` in `dir` (close-on-exec; non-blocking if asked). A
// stale socket there (nobody listening: a run that crashed) is replaced; a live one, or any
// other kind of file, is an Error naming dir.path_of(name).
Result<UniqueFd> listen_at(const Dir& dir, const std::string& name, int backlog, bool nonblocking);
// A Unix socket of `type` (SOCK_STREAM, SOCK_SEQPACKET; flags may be or'ed in) connected to
// `name` in `dir`. The Error keeps connect's errno (ENOENT, ECONNREFUSED: nobody there).
Result<UniqueFd> connect_at(const Dir& dir, const std::string& name, int type);

// Removes the socket `name` from its directory on destruction if it is still the one bound
// there (same inode), through its own handle on the directory.
class SocketGuard {
 public:
  // Call right after listen_at(dir, name) succeeded.
  static Result<SocketGuard> after_listen(const Dir& dir, const std::string& name);
  SocketGuard(SocketGuard&&) = default;
  SocketGuard& operator=(SocketGuard&&) = default;
  ~SocketGuard();

 private:
  SocketGuard() = default;
  Dir dir_;
  std::string name_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace moss::privdir
