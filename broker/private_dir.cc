#include "broker/private_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/syscall.h"
#include "base/unix_socket.h"

namespace moss::privdir {
namespace {

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Opens and checks `name` in the directory `parent` (an fd); `shown` names it in errors.
Result<UniqueFd> open_checked(int parent, const std::string& name, const std::string& shown, const std::string& what,
                              bool create) {
  auto refuse = [&](const std::string& why, int err = 0) { return make_error("the " + what + " " + shown + " " + why, err); };
  if (create && mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST) {
    return sys_error("create", "the " + what + " " + shown);
  }
  int raw = openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (raw < 0) {
    int e = errno;
    struct stat st;
    if (e == ENOENT) return refuse("does not exist", ENOENT);
    if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISLNK(st.st_mode)) return refuse("is a symbolic link, which moss does not follow", ELOOP);
      if (!S_ISDIR(st.st_mode)) return refuse("is not a directory", ENOTDIR);
    }
    return sys_error_code(e, "open", "the " + what + " " + shown);
  }
  UniqueFd fd(raw);
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(fstat(fd.get(), &st)));
  if (st.st_uid != geteuid()) {
    return refuse("belongs to another user (uid " + std::to_string(st.st_uid) + "), not to you (uid " +
                  std::to_string(geteuid()) + ")", EPERM);
  }
  // Writable by others: someone else may have put anything in it (a symlink where moss's lock
  // or socket goes), so it is not ours to use, whoever owns it.
  if (st.st_mode & 022) {
    return refuse("is writable by other users (mode " + mode_text(st.st_mode) + "); it must be 0700, only yours", EPERM);
  }
  // Ours, and only we could have written in it: make it 0700 if it is not (made just now, the
  // umask may have taken bits we need; made by the user, it may be readable by others).
  if ((st.st_mode & 07777) != 0700) MOSS_TRY_VOID(MOSS_SYS(fchmod(fd.get(), 0700)));
  return fd;
}

}  // namespace

Result<Dir> Dir::open(const std::string& path, const std::string& what, bool create) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : p.substr(0, slash);
  std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
  if (name.empty() || name == "." || name == ".." || p == "/") {
    return make_error("the " + what + " '" + path + "' must name a directory of its own, not '" + name + "'");
  }
  int raw = ::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (raw < 0) {
    int e = errno;
    if (e == ENOENT) return make_error("the " + what + " " + p + " cannot be used: its parent " + parent + " does not exist", e);
    return sys_error_code(e, "open", "its parent " + parent).add_context("the " + what + " " + p + " cannot be used");
  }
  UniqueFd parent_fd(raw);
  Dir d;
  MOSS_TRY(d.fd_, open_checked(parent_fd.get(), name, p, what, create));
  d.path_ = p;
  return d;
}

Result<Dir> Dir::sub(const std::string& name, const std::string& what, bool create) const {
  MOSS_ASSERT(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..");
  Dir d;
  d.path_ = path_of(name);
  MOSS_TRY(d.fd_, open_checked(fd_.get(), name, d.path_, what, create));
  return d;
}

Result<Dir> Dir::dup() const {
  Dir d;
  MOSS_TRY(int raw, MOSS_SYS(fcntl(fd_.get(), F_DUPFD_CLOEXEC, 3)));
  d.fd_.reset(raw);
  d.path_ = path_;
  return d;
}

std::string Dir::fd_path(const std::string& name) const {
  return "/proc/self/fd/" + std::to_string(fd_.get()) + "/" + name;
}

Result<UniqueFd> Dir::open_file(const std::string& name, int flags, mode_t mode) const {
  int raw = openat(fd_.get(), name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (raw < 0) {
    int e = errno;
    if (e == ELOOP) return make_error(path_of(name) + " is a symbolic link, which moss does not follow", e);
    return sys_error_code(e, "open", path_of(name));
  }
  return UniqueFd(raw);
}

bool Dir::same_file(int fd, const std::string& name) const {
  struct stat a, b;
  return fstat(fd, &a) == 0 && fstatat(fd_.get(), name.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

bool Dir::remove(const std::string& name) const { return unlinkat(fd_.get(), name.c_str(), 0) == 0; }

bool Dir::remove_dir(const std::string& name) const { return unlinkat(fd_.get(), name.c_str(), AT_REMOVEDIR) == 0; }

std::vector<std::string> Dir::entries() const {
  std::vector<std::string> out;
  int raw = openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (raw < 0) return out;
  DIR* d = fdopendir(raw);
  if (!d) {
    close(raw);
    return out;
  }
  while (dirent* ent = readdir(d)) {
    std::string n = ent->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

Result<UniqueFd> listen_at(const Dir& dir, const std::string& name, int backlog, bool nonblocking) {
  struct stat st;
  if (fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISSOCK(st.st_mode)) {
    return make_error(dir.path_of(name) + " exists and is not a socket; remove it or choose another path");
  }
  auto fd = listen_unix(dir.fd_path(name), backlog, nonblocking);
  if (fd) return fd;
  // listen_unix's sentences name the /proc path it was given; name the real one.
  std::string message = fd.error().message, shown = dir.fd_path(name);
  for (size_t at; (at = message.find(shown)) != std::string::npos;) message.replace(at, shown.size(), dir.path_of(name));
  return make_error(message, fd.error().err);
}

Result<UniqueFd> connect_at(const Dir& dir, const std::string& name, int type) {
  std::string path = dir.fd_path(name);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error("the socket name " + name + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  MOSS_TRY(int raw, MOSS_SYS(socket(AF_UNIX, type | SOCK_CLOEXEC, 0)));
  UniqueFd sock(raw);
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    return sys_error_code(e, "connect to", dir.path_of(name));
  }
  return sock;
}

Result<SocketGuard> SocketGuard::after_listen(const Dir& dir, const std::string& name) {
  SocketGuard g;
  MOSS_TRY(g.dir_, dir.dup());
  g.name_ = name;
  struct stat st;
  if (fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    g.dev_ = st.st_dev;
    g.ino_ = st.st_ino;
  }
  return g;
}

SocketGuard::~SocketGuard() {
  if (!dir_.valid()) return;  // Moved from.
  struct stat st;
  if (fstatat(dir_.fd(), name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev_ && st.st_ino == ino_ &&
      S_ISSOCK(st.st_mode)) {
    dir_.remove(name_);
  }
}

}  // namespace moss::privdir
