#include "broker/console_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/file.h"
#include "base/log.h"

namespace moss {

Result<ConsoleSink> ConsoleSink::open(bool to_stdout, const std::string& file) {
  ConsoleSink s;
  s.to_stdout_ = to_stdout;
  s.file_ = file;
  if (file.empty()) return s;
  // O_NONBLOCK: opening a FIFO nobody reads fails (ENXIO) instead of waiting for a reader, and
  // later writes to a FIFO or terminal that cannot take more fail instead of stalling the VM's
  // supervision. O_EXCL on creation: we know whether the file is ours to remove.
  constexpr int kFlags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 10; attempt++) {
    fd = ::open(file.c_str(), kFlags);
    if (fd >= 0 || errno != ENOENT) break;
    fd = ::open(file.c_str(), kFlags | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) s.created_ = true;
    else if (errno != EEXIST) break;  // EEXIST: made meanwhile; open that one.
  }
  if (fd < 0) {
    if (errno == ENXIO) return make_error("nobody is reading the FIFO " + file + " given to --console; start its reader first", ENXIO);
    return sys_error("open", "the --console file " + file);
  }
  s.fd_.reset(fd);
  struct stat st;
  if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
    return make_error("the --console file " + file + " is " + describe_file_type(st.st_mode) +
                      "; give a regular file, a terminal or a FIFO");
  }
  return s;
}

void ConsoleSink::remove_if_unused() {
  if (!created_ || written_ || !fd_) return;
  struct stat a, b;
  if (fstat(fd_.get(), &a) == 0 && lstat(file_.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino &&
      b.st_size == 0) {
    unlink(file_.c_str());
  }
  created_ = false;
}

void ConsoleSink::write(const uint8_t* data, size_t size) {
  auto put = [&](int fd, const char* what) {
    auto r = write_all(fd, data, size);
    if (!r && !warned_) {
      warned_ = true;
      LOG_WARN("cannot write the guest console to %s: %s", what, r.error().message.c_str());
    }
  };
  if (to_stdout_) put(STDOUT_FILENO, "stdout");
  if (fd_) {
    put(fd_.get(), file_.c_str());
    written_ = true;
  }
  for (size_t i = 0; i < size; i++) {
    if (data[i] != '\r') tail_.push_back(static_cast<char>(data[i]));
  }
  if (tail_.size() > 2 * kTailBytes) {
    tail_.erase(0, tail_.size() - kTailBytes);
    trimmed_ = true;
  }
}

std::string ConsoleSink::tail() const {
  size_t start = tail_.size() > kTailBytes ? tail_.size() - kTailBytes : 0;
  if (trimmed_ || start > 0) {
    size_t nl = tail_.find('\n', start);
    start = nl == std::string::npos ? tail_.size() : nl + 1;  // Whole lines only.
  }
  return tail_.substr(start);
}

}  // namespace moss
