#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/syscall.h"

namespace moss {

Result<std::vector<uint8_t>> read_fd_fully(int fd, uint64_t max_bytes, const std::string& what) {
  struct stat st;
  MOSS_CHECK(MOSS_SYS(fstat(fd, &st)));
  if (!S_ISREG(st.st_mode)) return make_error(what + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return make_error(what + " is too large (" + std::to_string(st.st_size) + " bytes)");
  }
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    MOSS_TRY(ssize_t n, MOSS_SYS(pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(done))));
    if (n == 0) return make_error(what + " shrank while being read");
    done += static_cast<size_t>(n);
  }
  return buf;
}

Result<std::string> read_text_file(const std::string& path) {
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return make_error("cannot open " + path + ": " + std::strerror(errno), errno);
  UniqueFd fd(raw);
  std::string out;
  char buf[4096];
  for (;;) {
    MOSS_TRY(ssize_t n, MOSS_SYS(::read(fd.get(), buf, sizeof buf)));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<void> write_all(int fd, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    MOSS_TRY(ssize_t n, MOSS_SYS(::write(fd, p, len)));
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

}  // namespace moss
