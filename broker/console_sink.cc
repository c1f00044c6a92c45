#include "broker/console_sink.h"

#include <fcntl.h>
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
  if (!file.empty()) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0) return make_error("cannot open the --console file " + file + ": " + strerror(errno), errno);
    s.fd_.reset(fd);
  }
  return s;
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
  if (fd_) put(fd_.get(), file_.c_str());
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
