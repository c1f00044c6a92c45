#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/syscall.h"

namespace moss {

std::string describe_file_type(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "an unknown kind of file";
  }
}

Result<uint64_t> regular_file_size(int fd, const std::string& what) {
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(fstat(fd, &st)));
  if (!S_ISREG(st.st_mode)) return make_error(what + " is not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

Result<void> pread_exact(int fd, uint64_t offset, std::span<uint8_t> out, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    MOSS_TRY(ssize_t n, MOSS_SYS(pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done))));
    if (n == 0) return make_error(what + " ended early (was it changed while being read?)");
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<std::vector<uint8_t>> read_file_head(int fd, uint64_t max_bytes, const std::string& what) {
  MOSS_TRY(uint64_t size, regular_file_size(fd, what));
  std::vector<uint8_t> buf(static_cast<size_t>(size < max_bytes ? size : max_bytes));
  MOSS_TRY_VOID(pread_exact(fd, 0, buf, what));
  return buf;
}

Result<std::string> read_text_file(const std::string& path) {
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return sys_error("open", path);
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
