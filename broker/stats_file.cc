#include "broker/stats_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <capnp/message.h>

#include "base/file.h"
#include "base/log.h"
#include "base/unix_socket.h"
#include "ipc/json.capnp.h"
#include "ipc/json.h"

namespace moss {

void write_stats_file(const std::string& path, const RunTimes& t, const rusage& child) {
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  auto cpu_ms = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000.0 + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000.0;
  };
  // Replaced whole (a new file renamed over it), so a reader never sees half of it; through a
  // symlink, the file it points to is replaced. Never a FIFO or device that appeared there
  // since the start (check_stats_file refused one then).
  std::string target = path;
  struct stat st;
  if (lstat(target.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char* real = realpath(target.c_str(), nullptr);
    if (real == nullptr) {
      LOG_WARN("%s", sys_message("write", "--stats file " + path, errno).c_str());
      return;
    }
    target = real;
    std::free(real);
  }
  if (lstat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    LOG_WARN("did not write --stats file %s: it is now %s, not a regular file", path.c_str(),
             describe_file_type(st.st_mode).c_str());
    return;
  }
  std::string tmp = target + ".XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  FILE* f = fd < 0 ? nullptr : fdopen(fd, "w");
  if (!f) {
    LOG_WARN("%s", sys_message("write", "--stats file " + path, errno).c_str());
    if (fd >= 0) {
      close(fd);
      unlink(tmp.c_str());
    }
    return;
  }
  fchmod(fd, 0644);
  capnp::MallocMessageBuilder message;
  auto figures = message.initRoot<ipc::RunFigures>();
  figures.setSpawnNs(t.spawn_ns);
  figures.setFirstRunNs(t.first_run_ns);
  figures.setFirstExitNs(t.first_exit_ns);
  figures.setAgentConnectedNs(t.agent_connected_ns);
  figures.setCommandExitedNs(t.command_exited_ns);
  figures.setBrokerMaxrssKib(self.ru_maxrss);
  figures.setBrokerCpuMs(cpu_ms(self));
  figures.setVcpuMaxrssKib(child.ru_maxrss);
  figures.setVcpuCpuMs(cpu_ms(child));
  std::fputs(ipc::to_json(figures.asReader()).c_str(), f);
  bool written = std::fflush(f) == 0 && !std::ferror(f);
  written = std::fclose(f) == 0 && written;
  if (!written || rename(tmp.c_str(), target.c_str()) != 0) {
    LOG_WARN("%s", sys_message("write", "--stats file " + path, errno).c_str());
    unlink(tmp.c_str());
  }
}

// --stats FILE is replaced whole when the VM ends: refuse at the start what must not be
// replaced (a FIFO, a device, a directory) or cannot be written (no such directory).
Result<void> check_stats_file(const std::string& path) {
  if (path.empty()) return {};
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return make_error("the --stats file " + path + " is " + describe_file_type(st.st_mode) +
                        ", which moss would replace; give the path of a regular file");
    }
    return {};
  }
  if (errno != ENOENT) return sys_error("use the --stats file", path);
  std::string dir = parent_dir(path);
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error("the directory of the --stats file " + path + " does not exist");
  }
  return {};
}

}  // namespace moss
